//! Turns token bytes into text pieces: whole UTF-8 characters only, stop strings held back and cut.

/// What one push produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Text safe to show now; may be empty.
    pub text: String,
    /// A stop string was found, whose index in the request's `stop` this
    /// is; `text` ends just before it and generation must end.
    pub stopped: Option<u32>,
}

/// Accumulates token bytes and releases text that can no longer change.
///
/// Two things hold text back: a multi-byte character whose bytes are split
/// across tokens (emoji, CJK, accented letters in byte-level BPE), and a tail
/// that might be the start of a stop string.
#[derive(Debug)]
pub(crate) struct TextAssembler {
    /// Non-empty stop strings, each with its index in the request's list.
    stops: Vec<(u32, String)>,
    /// Bytes of an incomplete UTF-8 character at the end of the stream.
    pending: Vec<u8>,
    /// Decoded text not yet released because it may start a stop string.
    held: String,
}

impl TextAssembler {
    pub(crate) fn new(stops: &[String]) -> Self {
        Self {
            stops: (0u32..)
                .zip(stops)
                .filter(|(_, s)| !s.is_empty())
                .map(|(i, s)| (i, s.clone()))
                .collect(),
            pending: Vec::new(),
            held: String::new(),
        }
    }

    /// Adds one token's bytes.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Piece {
        self.pending.extend_from_slice(bytes);
        let decoded = decode_prefix(&mut self.pending);
        self.held.push_str(&decoded);
        self.release()
    }

    /// End of generation: nothing more will come, so release everything,
    /// with U+FFFD for a character that never completed.
    pub(crate) fn finish(&mut self) -> String {
        let tail = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        self.held.push_str(&tail);
        // The tail might complete a stop string only now.
        let piece = self.release();
        if piece.stopped.is_some() {
            return piece.text;
        }
        let mut out = piece.text;
        out.push_str(&std::mem::take(&mut self.held));
        out
    }

    fn release(&mut self) -> Piece {
        if let Some((at, index)) = self.first_stop() {
            let text = self.held[..at].to_string();
            self.held.clear();
            return Piece {
                text,
                stopped: Some(index),
            };
        }
        let keep = self.stop_prefix_len();
        let cut = self.held.len() - keep;
        let rest = self.held.split_off(cut);
        Piece {
            text: std::mem::replace(&mut self.held, rest),
            stopped: None,
        }
    }

    /// Where the earliest stop string starts in `held`, and its index; of
    /// two starting at the same place, the first listed.
    fn first_stop(&self) -> Option<(usize, u32)> {
        self.stops
            .iter()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, *i)))
            .min()
    }

    /// Length of the longest tail of `held` that some stop string starts with.
    fn stop_prefix_len(&self) -> usize {
        let mut best = 0;
        for (_, stop) in &self.stops {
            let max = stop.len().min(self.held.len());
            for k in (best + 1..=max).rev() {
                if stop.is_char_boundary(k)
                    && self.held.is_char_boundary(self.held.len() - k)
                    && self.held.ends_with(&stop[..k])
                {
                    best = k;
                    break;
                }
            }
        }
        best
    }
}

/// Removes and decodes the longest complete-UTF-8 prefix of `bytes`, leaving an
/// unfinished trailing character in place. Bytes that can never be valid
/// become U+FFFD so output always progresses.
fn decode_prefix(bytes: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut start = 0;
    loop {
        match std::str::from_utf8(&bytes[start..]) {
            Ok(s) => {
                out.push_str(s);
                start = bytes.len();
                break;
            }
            Err(e) => {
                let valid = start + e.valid_up_to();
                out.push_str(std::str::from_utf8(&bytes[start..valid]).expect("validated prefix"));
                match e.error_len() {
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        start = valid + bad;
                    }
                    // An incomplete character at the end: wait for more bytes.
                    None => {
                        start = valid;
                        break;
                    }
                }
            }
        }
    }
    bytes.drain(..start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], chunks: &[&[u8]]) -> (Vec<String>, Option<u32>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut asm = TextAssembler::new(&stops);
        let mut pieces = Vec::new();
        for chunk in chunks {
            let piece = asm.push(chunk);
            pieces.push(piece.text);
            if piece.stopped.is_some() {
                return (pieces, piece.stopped);
            }
        }
        pieces.push(asm.finish());
        (pieces, None)
    }

    #[test]
    fn split_multibyte_characters_are_never_emitted_half() {
        let emoji = "🦀".as_bytes();
        let (pieces, _) = run(&[], &[b"a", &emoji[..1], &emoji[1..3], &emoji[3..], b"b"]);
        assert_eq!(pieces, ["a", "", "", "🦀", "b", ""]);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (pieces, _) = run(&[], &[b"x\xffy"]);
        assert_eq!(pieces.concat(), "x\u{fffd}y");
    }

    #[test]
    fn an_unfinished_character_at_the_end_is_replaced() {
        let (pieces, _) = run(&[], &[b"ok", &"é".as_bytes()[..1]]);
        assert_eq!(pieces.concat(), "ok\u{fffd}");
    }

    #[test]
    fn stop_string_inside_one_token() {
        let (pieces, stopped) = run(&["END"], &[b"hello END more"]);
        assert_eq!(stopped, Some(0));
        assert_eq!(pieces.concat(), "hello ");
    }

    #[test]
    fn stop_string_across_tokens_is_held_then_cut() {
        let (pieces, stopped) = run(&["</s>"], &[b"Hi <", b"/", b"s> tail"]);
        assert_eq!(stopped, Some(0));
        assert_eq!(pieces, ["Hi ", "", ""]);
    }

    #[test]
    fn held_text_is_released_when_it_stops_matching() {
        let (pieces, stopped) = run(&["STOP"], &[b"ST", b"ay"]);
        assert_eq!(stopped, None);
        assert_eq!(pieces, ["", "STay", ""]);
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (pieces, stopped) = run(&["cd", "b"], &[b"abcd"]);
        assert_eq!(stopped, Some(1), "`b` starts first and is listed second");
        assert_eq!(pieces.concat(), "a");
    }

    #[test]
    fn non_ascii_stop_strings_respect_char_boundaries() {
        let (pieces, stopped) = run(&["日本"], &["こんにちは日".as_bytes(), "本語".as_bytes()]);
        assert_eq!(stopped, Some(0));
        assert_eq!(pieces.concat(), "こんにちは");
    }

    #[test]
    fn stop_completed_by_final_flush() {
        let stops = vec!["x\u{fffd}".to_string()];
        let mut asm = TextAssembler::new(&stops);
        assert_eq!(asm.push(b"ax").text, "a");
        assert_eq!(asm.push(&[0xe6]).text, "");
        assert_eq!(asm.finish(), "");
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        let (pieces, stopped) = run(&[""], &[b"abc"]);
        assert_eq!(stopped, None);
        assert_eq!(pieces.concat(), "abc");
    }

    #[test]
    fn the_stop_index_counts_ignored_empty_strings() {
        let (pieces, stopped) = run(&["", "zz", "c"], &[b"abcd"]);
        assert_eq!(stopped, Some(2));
        assert_eq!(pieces.concat(), "ab");
    }
}
