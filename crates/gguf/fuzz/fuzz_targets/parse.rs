//! Fuzzes the GGUF reader: any bytes must give a header or an error, never a
//! panic, a hang or a huge allocation (libFuzzer's -rss_limit_mb catches those).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = gguf::parse_bytes(data) {
        // Exercise the accessors too: they index into parsed data.
        let _ = (g.architecture(), g.context_length(), g.quantization(), g.check_hparams());
        let _ = (g.parameter_count(), g.vocab_size(), g.chat_template());
        for (key, value) in g.metadata() {
            let _ = (key.len(), value.to_string());
        }
    }
});
