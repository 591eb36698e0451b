//! A real S3-compatible server on loopback for the object storage tests:
//! moto in its server mode (from PyPI, installed by `scripts/s3server.sh`
//! into `target/s3server`), started on `127.0.0.1:0` with a bucket made,
//! and killed on drop. Any credentials are accepted; tests pass fixed ones
//! through the standard AWS variables.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

pub struct S3Server {
    /// `http://127.0.0.1:<port>`, for `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    child: Child,
}

/// The moto_server the script installed (once per test process).
fn moto_server() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| crate::setup_script("s3server.sh"))
        .clone()
}

impl S3Server {
    /// Starts a server holding one empty bucket, `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        let mut child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moto_server");
        // Werkzeug names the port it bound: " * Running on http://127.0.0.1:N".
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = loop {
            let line = lines
                .next()
                .expect("moto_server printed its address")
                .unwrap();
            if let Some(at) = line.find("http://127.0.0.1:") {
                break line[at..].trim().to_string();
            }
        };
        // Keep draining its log, so a full pipe never stops it.
        std::thread::spawn(move || for _ in lines {});
        let server = S3Server { endpoint, child };
        server.make_bucket(bucket);
        server
    }

    /// `PUT /<bucket>`: moto accepts it unsigned.
    fn make_bucket(&self, bucket: &str) {
        self.put(&format!("/{bucket}"), &[]);
    }

    /// Puts the file at `path` as the object `bucket/key`, the way a site
    /// would copy a GGUF into a bucket with its own tools.
    pub fn put_object(&self, bucket: &str, key: &str, path: &Path) {
        self.put(&format!("/{bucket}/{key}"), &std::fs::read(path).unwrap());
    }

    fn put(&self, target: &str, body: &[u8]) {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        write!(
            tcp,
            "PUT {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        tcp.write_all(body).unwrap();
        let mut status = String::new();
        BufReader::new(tcp).read_line(&mut status).unwrap();
        assert!(status.contains(" 200"), "PUT {target}: {status}");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
