use super::*;

fn key(byte: u8) -> Key {
    Key::from_bytes(&[byte; 32]).unwrap()
}

fn plain(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn sealed_copy(bytes: &[u8], k: &Key) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("plain"), dir.path().join("sealed"));
    std::fs::write(&src, bytes).unwrap();
    seal(&src, &dst, k).unwrap();
    (dir, dst)
}

fn read_all(path: &Path, k: Option<&Key>) -> Result<Vec<u8>, VaultError> {
    let mut r = Reader::open(path, k)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 300_000];
    loop {
        let n = r.read_plain(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn sealed_files_read_back_and_hide_their_plaintext() {
    let k = key(7);
    for len in [0, 1, CHUNK as usize, CHUNK as usize * 2 + 12_345] {
        let bytes = plain(len);
        let (_dir, sealed) = sealed_copy(&bytes, &k);
        assert!(is_sealed(&sealed).unwrap());
        assert_eq!(read_all(&sealed, Some(&k)).unwrap(), bytes, "{len}");
        let raw = std::fs::read(&sealed).unwrap();
        if len >= 64 {
            assert!(
                !raw.windows(64).any(|w| w == &bytes[..64]),
                "plaintext on disk"
            );
        }
    }
}

#[test]
fn the_wrong_key_and_no_key_are_refused_before_decrypting() {
    let (_dir, sealed) = sealed_copy(&plain(5000), &key(1));
    assert!(matches!(
        read_all(&sealed, Some(&key(2))),
        Err(VaultError::WrongKey { .. })
    ));
    assert!(matches!(
        read_all(&sealed, None),
        Err(VaultError::NoKey { .. })
    ));
}

#[test]
fn a_flipped_byte_or_swapped_records_fail_authentication() {
    let k = key(3);
    let bytes = plain(CHUNK as usize * 2);
    let (_dir, sealed) = sealed_copy(&bytes, &k);
    let raw = std::fs::read(&sealed).unwrap();
    // One ciphertext byte of the second record.
    let mut flipped = raw.clone();
    let at = (HEADER + CHUNK + RECORD_EXTRA + 100) as usize;
    flipped[at] ^= 1;
    std::fs::write(&sealed, &flipped).unwrap();
    assert!(matches!(
        read_all(&sealed, Some(&k)),
        Err(VaultError::Tampered { record: 1, .. })
    ));
    // The two records swapped: each is authentic, but not in its place.
    let record = (CHUNK + RECORD_EXTRA) as usize;
    let h = HEADER as usize;
    let mut swapped = raw[..h].to_vec();
    swapped.extend_from_slice(&raw[h + record..h + 2 * record]);
    swapped.extend_from_slice(&raw[h..h + record]);
    std::fs::write(&sealed, &swapped).unwrap();
    assert!(matches!(
        read_all(&sealed, Some(&k)),
        Err(VaultError::Tampered { record: 0, .. })
    ));
    // A record of another file of the same size, under the same key.
    let (_other, twin) = sealed_copy(&plain(CHUNK as usize * 2), &k);
    let twin_raw = std::fs::read(&twin).unwrap();
    let mut spliced = raw[..h + record].to_vec();
    spliced.extend_from_slice(&twin_raw[h + record..]);
    std::fs::write(&sealed, &spliced).unwrap();
    assert!(matches!(
        read_all(&sealed, Some(&k)),
        Err(VaultError::Tampered { record: 1, .. })
    ));
    // A header claiming an impossible size.
    let mut huge = raw.clone();
    huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&sealed, &huge).unwrap();
    assert!(matches!(
        read_all(&sealed, Some(&k)),
        Err(VaultError::BadHeader { .. })
    ));
    assert!(plaintext_len(&sealed).is_err());
    // Cut short.
    std::fs::write(&sealed, &raw[..raw.len() - 1]).unwrap();
    assert!(matches!(
        read_all(&sealed, Some(&k)),
        Err(VaultError::BadHeader { .. })
    ));
}

#[test]
fn a_plain_file_reads_as_itself_and_loads_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain");
    let bytes = plain(3 * CHUNK as usize / 2);
    std::fs::write(&path, &bytes).unwrap();
    assert!(!is_sealed(&path).unwrap());
    assert_eq!(read_all(&path, None).unwrap(), bytes);
    let k = key(9);
    let (_d, sealed) = sealed_copy(&bytes, &k);
    let mem = in_memory(&sealed, Some(&k), "model").unwrap();
    assert_eq!(std::fs::read(mem.path()).unwrap(), bytes);
}

#[test]
fn resealed_records_replace_damaged_ones() {
    let k = key(4);
    let bytes = plain(CHUNK as usize * 2 + 500);
    let (_dir, sealed) = sealed_copy(&bytes, &k);
    let mut raw = std::fs::read(&sealed).unwrap();
    let at = (HEADER + CHUNK + RECORD_EXTRA + 50) as usize;
    raw[at] ^= 0xff;
    std::fs::write(&sealed, &raw).unwrap();
    assert!(read_all(&sealed, Some(&k)).is_err());
    // The last two records (one full, one short) sealed again.
    reseal(&sealed, &k, CHUNK, &bytes[CHUNK as usize..]).unwrap();
    assert_eq!(read_all(&sealed, Some(&k)).unwrap(), bytes);
    // Not on a record boundary: refused.
    assert!(reseal(&sealed, &k, 10, &bytes[10..20]).is_err());
}
