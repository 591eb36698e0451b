//! Prints what the reader sees in a GGUF file: `cargo run -p gguf --example inspect FILE`.

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: inspect FILE.gguf");
        std::process::exit(2);
    };
    let started = std::time::Instant::now();
    match gguf::read_file(std::path::Path::new(&path)) {
        Ok(g) => {
            println!("parsed in {:?}", started.elapsed());
            println!(
                "version {}, {} tensors, data at byte {}",
                g.version,
                g.tensors.len(),
                g.data_offset
            );
            for (key, value) in g.metadata() {
                println!("{key} = {value}");
            }
            println!("parameters: {}", g.parameter_count());
            println!("quantization: {:?}", g.quantization());
        }
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(1);
        }
    }
}
