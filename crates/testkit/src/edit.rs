//! A second version of a GGUF file: the same file with one tensor's data
//! changed, as a fine-tune of one layer or a re-quantized tensor leaves a
//! model. Tests of delta transfers use it.

use std::os::unix::fs::FileExt;
use std::path::Path;

/// Copies `src` to `dst` with every byte of tensor `name`'s data inverted,
/// and returns that tensor's size in bytes. Panics on a file that has no
/// such tensor.
pub fn change_tensor(src: &Path, dst: &Path, name: &str) -> u64 {
    let header = gguf::read_model(src).expect("a readable GGUF");
    let tensor = header
        .tensors
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{} has no tensor {name}", src.display()));
    std::fs::copy(src, dst).expect("copy the model");
    let at = header.data_offset + tensor.offset;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dst)
        .expect("open the copy");
    let mut data = vec![0u8; tensor.n_bytes as usize];
    file.read_exact_at(&mut data, at).expect("read the tensor");
    for b in &mut data {
        *b = !*b;
    }
    file.write_all_at(&data, at).expect("write the tensor");
    tensor.n_bytes
}
