//! The tensor element types a GGUF file may declare, with their block geometry.

/// A ggml tensor type, as numbered in `ggml.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(u32);

/// (id, name, elements per block, bytes per block), from ggml's `type_traits`
/// and the `static_assert`s on its block structs. Ids that ggml retired are absent.
const TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
];

impl GgmlType {
    /// `None` for ids ggml does not (or no longer) know.
    pub fn from_id(id: u32) -> Option<Self> {
        TYPES.iter().any(|t| t.0 == id).then_some(Self(id))
    }

    pub fn id(self) -> u32 {
        self.0
    }

    fn traits(self) -> (u32, &'static str, u64, u64) {
        *TYPES
            .iter()
            .find(|t| t.0 == self.0)
            .expect("GgmlType is only built from known ids")
    }

    pub fn name(self) -> &'static str {
        self.traits().1
    }

    /// Elements per quantisation block.
    pub fn block_size(self) -> u64 {
        self.traits().2
    }

    /// Bytes per quantisation block.
    pub fn block_bytes(self) -> u64 {
        self.traits().3
    }
}

/// Name of a `general.file_type` value (llama.cpp's `llama_ftype`), used to
/// describe a model's quantisation.
pub fn file_type_name(file_type: u32) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        41 => "Q2_0",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_retired_ids() {
        assert_eq!(GgmlType::from_id(3).unwrap().name(), "Q4_1");
        assert_eq!(GgmlType::from_id(12).unwrap().block_bytes(), 144);
        // Q4_2 and Q4_0_4_4 were removed from ggml; files using them are refused.
        assert!(GgmlType::from_id(4).is_none());
        assert!(GgmlType::from_id(31).is_none());
        assert!(GgmlType::from_id(u32::MAX).is_none());
    }

    #[test]
    fn ids_are_unique() {
        for (i, a) in TYPES.iter().enumerate() {
            assert!(
                TYPES[i + 1..].iter().all(|b| b.0 != a.0),
                "duplicate id {}",
                a.0
            );
        }
    }
}
