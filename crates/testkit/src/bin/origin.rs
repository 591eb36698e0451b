//! The loopback origin as a program, for benchmarks: serves a directory
//! (`/files/<path>` with ranges, `/<org>/<repo>/resolve/<rev>/<path>`)
//! and prints its base URL, until killed.
//!
//!     cargo run --release -p testkit --bin origin -- DIR

fn main() {
    let dir = std::env::args_os().nth(1).expect("usage: origin DIR");
    let origin = testkit::origin::Origin::start(std::path::Path::new(&dir));
    println!("{}", origin.base);
    loop {
        std::thread::park();
    }
}
