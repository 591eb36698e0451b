//! Tests of the typed configuration: flags, `HEARTH_*` variables and TOML onto the same fields.

use super::*;
use clap::Parser;

/// `ServeArgs` parsed on its own, as `hearth serve` would.
#[derive(Parser)]
struct ServeOnly {
    #[command(flatten)]
    args: ServeArgs,
}

impl ServeArgs {
    fn parse_from<'a>(words: impl IntoIterator<Item = &'a str>) -> ServeArgs {
        ServeOnly::parse_from(words).args
    }
}

fn global(home: &Path, config: Option<PathBuf>) -> GlobalArgs {
    GlobalArgs {
        home: Some(home.to_path_buf()),
        config,
        log: None,
        log_format: crate::cli::LogFormat::Text,
    }
}

#[test]
fn several_models_come_from_flags_or_a_list_in_the_file() {
    let one = |v: &str| Some(OneOrMany::One(v.into()));
    let many = |v: &[&str]| Some(OneOrMany::Many(v.iter().map(|s| s.to_string()).collect()));
    let flags = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(served_models(None, None).unwrap(), ["smollm2"]);
    assert_eq!(served_models(None, one("gemma3")).unwrap(), ["gemma3"]);
    assert_eq!(served_models(None, many(&["a", "b"])).unwrap(), ["a", "b"]);
    assert_eq!(
        served_models(flags(&["c"]), many(&["a", "b"])).unwrap(),
        ["c"]
    );
    assert_eq!(served_models(flags(&[]), one("a")).unwrap(), ["a"]);
    assert!(served_models(flags(&["a", "a"]), None).is_err());
    assert!(served_models(None, many(&[])).is_err());
    assert!(served_models(flags(&["a", " "]), None).is_err());
}

#[test]
fn flags_beat_file_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[engine]\nthreads = 3\nctx_size = 2048\n[server]\nport = 9000\n",
    )
    .unwrap();
    let flags = EngineArgs {
        threads: Some(1),
        ..EngineArgs::default()
    };
    let c = Config::load(&global(dir.path(), None), &flags, None).unwrap();
    assert_eq!(c.engine.threads, 1);
    assert_eq!(c.engine.ctx_size, Some(2048));
    assert_eq!(c.server.port, 9000);
    assert_eq!(c.server.models, ["smollm2"]);
    assert_eq!(c.home, dir.path());
    assert!(!c.server.insecure_no_auth);
    assert!(c.engine.use_mmap);
    // Reading the weights into memory: from the file, or a flag.
    std::fs::write(dir.path().join("config.toml"), "[engine]\nmmap = false\n").unwrap();
    let c = Config::load(&global(dir.path(), None), &EngineArgs::default(), None).unwrap();
    assert!(!c.engine.use_mmap);
    std::fs::write(dir.path().join("config.toml"), "").unwrap();
    let no_mmap = EngineArgs {
        no_mmap: true,
        ..EngineArgs::default()
    };
    let c = Config::load(&global(dir.path(), None), &no_mmap, None).unwrap();
    assert!(!c.engine.use_mmap);
    // The KV layout: auto by default, the file's, then the flag's.
    assert_eq!(c.engine.kv_layout, engine::KvLayout::Auto);
    std::fs::write(
        dir.path().join("config.toml"),
        "[engine]\nkv_layout = \"unified\"\n",
    )
    .unwrap();
    let c = Config::load(&global(dir.path(), None), &EngineArgs::default(), None).unwrap();
    assert_eq!(c.engine.kv_layout, engine::KvLayout::Unified);
    let streams = EngineArgs {
        kv_layout: Some(engine::KvLayout::Streams),
        ..EngineArgs::default()
    };
    let c = Config::load(&global(dir.path(), None), &streams, None).unwrap();
    assert_eq!(c.engine.kv_layout, engine::KvLayout::Streams);
    std::fs::write(
        dir.path().join("config.toml"),
        "[engine]\nkv_layout = \"tiled\"\n",
    )
    .unwrap();
    let err = Config::load(&global(dir.path(), None), &EngineArgs::default(), None).unwrap_err();
    assert!(format!("{err:#}").contains("kv_layout"), "{err:#}");
}

#[test]
fn metrics_are_open_by_default_only_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |host: &str, open: Option<bool>| {
        let args =
            ServeArgs::parse_from(["serve", "--host", host].into_iter().chain(open.map(|o| {
                if o {
                    "--open-metrics=true"
                } else {
                    "--open-metrics=false"
                }
            })));
        Config::load(&global(dir.path(), None), &args.engine, Some(&args))
            .unwrap()
            .server
            .open_metrics
    };
    assert!(serve("127.0.0.1", None));
    assert!(serve("::1", None));
    assert!(!serve("0.0.0.0", None));
    assert!(serve("0.0.0.0", Some(true)));
    assert!(!serve("127.0.0.1", Some(false)));
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.toml");
    std::fs::write(&path, "[engine]\nthread = 3\n").unwrap();
    let err = Config::load(
        &global(dir.path(), Some(path.clone())),
        &EngineArgs::default(),
        None,
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("thread"), "{err:#}");

    std::fs::write(&path, "[engine]\nthreads = 0\n").unwrap();
    let err = Config::load(
        &global(dir.path(), Some(path)),
        &EngineArgs::default(),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("threads"), "{err}");
}

#[test]
fn an_explicit_config_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let err = Config::load(
        &global(dir.path(), Some(missing)),
        &EngineArgs::default(),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope.toml"), "{err}");
}
