//! Cuts a GGUF into a split set laid out the way llama.cpp's `gguf-split`
//! writes one (`<prefix>-00001-of-0000N.gguf`; all metadata in the first
//! file, `split.no`, `split.count` and `split.tensors.count` in each), so
//! tests can pull and run a real split model. llama.cpp's own tool is a
//! binary this project never runs, and no published split set is small
//! enough for the suite.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `parts` files named `<prefix>-0000k-of-0000N.gguf` into `dir`
/// holding `src`'s tensors in order, and returns their paths. Panics on a
/// file it cannot cut (this is a test helper).
pub fn split_gguf(src: &Path, dir: &Path, prefix: &str, parts: usize) -> Vec<PathBuf> {
    let bytes = std::fs::read(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let header = gguf::read_file(src).unwrap_or_else(|e| panic!("{e}"));
    let n_kv = u64_at(&bytes, 16) as u64;
    let kv_end = metadata_end(&bytes, n_kv);
    let tensors = &header.tensors;
    // Each file's header names the count, so the cut must make exactly `parts`.
    let groups: Vec<_> = tensors
        .chunks(tensors.len().div_ceil(parts.max(1)))
        .collect();
    assert!(
        parts >= 2 && groups.len() == parts,
        "cannot cut {} tensors into {parts} files",
        tensors.len()
    );
    let align = header.alignment;
    let mut paths = Vec::new();
    for (i, group) in groups.into_iter().enumerate() {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(group.len() as u64).to_le_bytes());
        // The first file keeps every key; the others need the alignment
        // only if it is not the default.
        let extra = u64::from(i > 0 && align != 32);
        let keys = if i == 0 { n_kv } else { extra } + 3;
        out.extend_from_slice(&keys.to_le_bytes());
        if i == 0 {
            out.extend_from_slice(&bytes[24..kv_end]);
        } else if extra == 1 {
            kv(
                &mut out,
                "general.alignment",
                4,
                &(align as u32).to_le_bytes(),
            );
        }
        kv(&mut out, "split.no", 2, &(i as u16).to_le_bytes());
        kv(&mut out, "split.count", 2, &(parts as u16).to_le_bytes());
        kv(
            &mut out,
            "split.tensors.count",
            5,
            &(tensors.len() as i32).to_le_bytes(),
        );
        let mut offset = 0u64;
        for t in group {
            string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + t.n_bytes).next_multiple_of(align);
        }
        pad(&mut out, align);
        for t in group {
            let start = (header.data_offset + t.offset) as usize;
            out.extend_from_slice(&bytes[start..start + t.n_bytes as usize]);
            pad(&mut out, align);
        }
        let path = dir.join(gguf::split::file_name(prefix, i as u32 + 1, parts as u32));
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&out).unwrap();
        paths.push(path);
    }
    paths
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn kv(out: &mut Vec<u8>, key: &str, value_type: u32, value: &[u8]) {
    string(out, key);
    out.extend_from_slice(&value_type.to_le_bytes());
    out.extend_from_slice(value);
}

fn pad(out: &mut Vec<u8>, align: u64) {
    out.resize((out.len() as u64).next_multiple_of(align) as usize, 0);
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> usize {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize
}

/// Bytes taken by one metadata value of type `ty` at `at`.
fn value_len(bytes: &[u8], at: usize, ty: u32) -> usize {
    match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8 + u64_at(bytes, at),
        9 => {
            let (elem, len) = (u32_at(bytes, at), u64_at(bytes, at + 4));
            (0..len).fold(12, |n, _| n + value_len(bytes, at + n, elem))
        }
        other => panic!("GGUF value type {other}"),
    }
}

/// Where the `n_kv` metadata entries of a (valid) GGUF end.
fn metadata_end(bytes: &[u8], n_kv: u64) -> usize {
    let mut at = 24;
    for _ in 0..n_kv {
        at += 8 + u64_at(bytes, at);
        let ty = u32_at(bytes, at);
        at += 4 + value_len(bytes, at + 4, ty);
    }
    at
}
