//! Deterministic prompt text: distinct questions and long documents of plausible English.

const WORDS: &[&str] = &[
    "the",
    "archive",
    "holds",
    "letters",
    "from",
    "a",
    "harbour",
    "town",
    "where",
    "ships",
    "carried",
    "grain",
    "and",
    "wool",
    "to",
    "distant",
    "markets",
    "every",
    "ledger",
    "records",
    "date",
    "sender",
    "receiver",
    "price",
    "of",
    "goods",
    "clerks",
    "copied",
    "them",
    "by",
    "hand",
    "under",
    "lamps",
    "in",
    "winter",
    "when",
    "river",
    "froze",
    "merchants",
    "waited",
    "for",
    "spring",
    "tides",
    "while",
    "children",
    "learned",
    "numbers",
    "at",
    "long",
    "tables",
    "old",
    "maps",
    "show",
    "roads",
    "bridges",
    "mills",
    "farms",
    "along",
    "valley",
    "hills",
];

const TOPICS: &[&str] = &[
    "the capital of Japan",
    "how bread rises",
    "why the sky is blue",
    "the tallest mountain",
    "how bees make honey",
    "the speed of sound",
    "what a ledger is",
    "how tides work",
    "the largest ocean",
    "how a compass works",
    "what rust is",
    "how clouds form",
    "the longest river",
    "why leaves change colour",
    "how a lock works",
    "what a harbour is",
];

/// A short, distinct question for client `i`.
pub fn question(i: usize) -> String {
    let topic = TOPICS[i % TOPICS.len()];
    format!("Question {i}: explain {topic} in a few sentences.")
}

/// About `words` words of text, different for each `seed`.
pub fn document(seed: u64, words: usize) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    let mut out = String::with_capacity(words * 7);
    for i in 0..words {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let w = WORDS[(state >> 33) as usize % WORDS.len()];
        if i > 0 {
            out.push(if i % 12 == 0 { '.' } else { ' ' });
            if i % 12 == 0 {
                out.push(' ');
            }
        }
        out.push_str(w);
    }
    out.push('.');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_deterministic_and_distinct() {
        assert_eq!(document(1, 50), document(1, 50));
        assert_ne!(document(1, 50), document(2, 50));
        assert_eq!(document(3, 40).split_whitespace().count(), 40);
        assert_ne!(question(1), question(2));
    }
}
