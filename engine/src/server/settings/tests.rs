use std::time::Duration;

use super::*;

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn file_error(text: &str) -> SettingsError {
    Settings::from_toml_str(text).expect_err(text)
}

#[test]
fn the_default_file_reads_as_the_defaults_and_names_every_key() {
    assert_eq!(
        Settings::from_toml_str(Settings::DEFAULT_TOML).unwrap(),
        Settings::default()
    );
    assert_eq!(Settings::from_toml_str("").unwrap(), Settings::default());
    for key in Settings::keys() {
        let set = format!("\n{key} = ");
        let unset = format!("\n# {key} = ");
        assert!(
            Settings::DEFAULT_TOML.contains(&set) || Settings::DEFAULT_TOML.contains(&unset),
            "the default file lacks `{key}`"
        );
    }
    // Each commented-out example is itself well formed.
    for line in Settings::DEFAULT_TOML.lines() {
        if let Some(example) = line.strip_prefix("# ").filter(|l| l.contains(" = ")) {
            Settings::from_toml_str(example).unwrap_or_else(|e| panic!("{example}: {e}"));
        }
    }
}

#[test]
fn values_take_their_forms() {
    let s = Settings::from_toml_str(
        r#"
        listen = "[::1]:9000"
        threads = 2
        pin = false
        backend = "epoll"
        max-message = 1000
        max-frame = "64KiB"
        max-fragments = 8
        handshake-timeout = "500ms"
        close-timeout = 2
        idle-timeout = "0"
        protocols = ["chat", "superchat"]
        max-conns = 10
        publish-token = "t"
        slow-consumer = "drop-oldest"
        demo-rate = 5
        log-format = "json"
        "#,
    )
    .unwrap();
    assert_eq!(s.listen, "[::1]:9000".parse().unwrap());
    assert_eq!((s.threads, s.pin, s.backend), (2, false, Backend::Epoll));
    assert_eq!((s.max_message, s.max_frame), (1000, Some(64 << 10)));
    assert_eq!(s.max_fragments, Some(8));
    assert_eq!(s.handshake_timeout, Duration::from_millis(500));
    assert_eq!(s.close_timeout, Duration::from_secs(2));
    assert_eq!(s.idle_timeout, Duration::ZERO);
    assert_eq!(s.protocols, ["chat", "superchat"]);
    assert_eq!(s.max_conns, Some(10));
    assert_eq!(s.publish_token.as_deref(), Some("t"));
    assert_eq!(s.slow_consumer, SlowConsumer::DropOldest);
    assert_eq!(s.demo_rate, 5.0);
    assert_eq!(s.log_format, LogFormat::Json);

    let config = s.builder().config().clone();
    assert_eq!(config.limits.max_frame, 64 << 10);
    assert_eq!(config.limits.idle_timeout, None);
    assert_eq!(config.handshake.allowed_origins, None);
    assert_eq!(config.topics, TopicRules::default());
    assert_eq!(config.slow_consumer, SlowConsumer::DropOldest);
    let defaults = Settings::default().builder().config().clone();
    assert_eq!(defaults.limits.max_frame, defaults.limits.max_message);
    assert_eq!(defaults.limits.idle_timeout, Some(Duration::from_secs(30)));
}

#[test]
fn an_unknown_key_is_named_with_its_line_and_the_closest_key() {
    let e = file_error("threads = 1\n\nmax_message = \"1MiB\"\n");
    assert_eq!((e.key(), e.line()), (Some("max_message"), Some(3)));
    let shown = e.to_string();
    assert!(
        shown.starts_with("line 3: key `max_message`: unknown key"),
        "{shown}"
    );
    assert!(shown.contains("did you mean `max-message`?"), "{shown}");

    let e = file_error("[server]\nthreads = 1\n");
    assert_eq!((e.key(), e.line()), (Some("server"), Some(1)));
    assert!(!e.to_string().contains("did you mean"), "{e}");
}

#[test]
fn a_bad_value_is_named_with_its_line_and_the_expected_form() {
    let e = file_error("# sizes\n\nmax-lag = \"lots\"\n");
    assert_eq!((e.key(), e.line()), (Some("max-lag"), Some(3)));
    assert!(
        e.to_string()
            .contains("'lots' is not a size (examples: 1000, 64KiB, 16MiB)"),
        "{e}"
    );

    let e = file_error("close-timeout = \"5h\"");
    assert!(
        e.to_string()
            .contains("unknown duration unit 'h' (use ms, s or m)"),
        "{e}"
    );

    let e = file_error("backend = \"kqueue\"");
    assert_eq!(e.key(), Some("backend"));
    assert!(e.to_string().contains("use uring, epoll or auto"), "{e}");

    let e = file_error("listen = \"localhost\"");
    assert!(
        e.to_string()
            .contains("not an address such as \"127.0.0.1:8080\""),
        "{e}"
    );

    let e = file_error("threads = -1");
    assert!(e.to_string().contains("expected a whole number"), "{e}");

    let e = file_error("demo-rate = 0");
    assert!(
        e.to_string().contains("not a rate between 0 and 1000000"),
        "{e}"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_named_with_its_line_and_the_expected_form() {
    let cases = [
        (
            "threads = \"four\"",
            "threads",
            "expected a whole number such as 64",
        ),
        ("pin = \"no\"", "pin", "expected a boolean"),
        (
            "max-message = true",
            "max-message",
            "expected a size such as \"64KiB\"",
        ),
        (
            "idle-timeout = 1.5",
            "idle-timeout",
            "expected a duration such as",
        ),
        (
            "protocols = \"chat\"",
            "protocols",
            "expected a list of strings",
        ),
        ("demo-symbols = [1]", "demo-symbols", "expected a string"),
        ("log = 3", "log", "expected a string"),
    ];
    for (text, key, expected) in cases {
        let e = file_error(&format!("\n{text}\n"));
        assert_eq!((e.key(), e.line()), (Some(key), Some(2)), "{text}: {e}");
        assert!(e.to_string().contains(expected), "{text}: {e}");
    }
}

#[test]
fn invalid_toml_is_named_with_its_line() {
    let e = file_error("threads = 1\nmax-message = 16MiB\n");
    assert_eq!((e.key(), e.line()), (None, Some(2)));
    assert!(e.to_string().starts_with("line 2: invalid TOML"), "{e}");
    let e = file_error("threads = 1\nthreads = 2\n");
    assert_eq!(e.line(), Some(2), "{e}");
}

#[test]
fn the_environment_overrides_the_file() {
    let dir = std::env::temp_dir().join(format!("ringcast-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringcast.toml");
    std::fs::write(&path, "threads = 1\nmax-topics = 3\nprotocols = [\"a\"]\n").unwrap();
    let s = Settings::load(
        Some(&path),
        env(&[
            ("RINGCAST_MAX_TOPICS", "5"),
            ("RINGCAST_PROTOCOLS", "b, c"),
            ("RINGCAST_MAX_LAG", "1MiB"),
            ("RINGCAST_MAX_CONNS", "7"),
            ("RINGCAST_DEMO", "true"),
            // Not keys: left alone.
            ("RINGCAST_URING", "off"),
            ("ringcast_threads", "9"),
            ("RINGCAST_threads", "9"),
            ("THREADS", "9"),
        ]),
    )
    .unwrap();
    assert_eq!((s.threads, s.max_topics, s.max_lag), (1, 5, 1 << 20));
    assert_eq!(s.protocols, ["b", "c"]);
    assert_eq!((s.max_conns, s.demo), (Some(7), true));

    std::fs::write(&path, "\n\nthreads = \"x\"\n").unwrap();
    let e = Settings::load(Some(&path), []).unwrap_err();
    assert_eq!(
        e.to_string().split(": key").next(),
        Some(&*format!("{}:3", path.display()))
    );
    // The file's bad value does not matter when the environment replaces it.
    let s = Settings::load(Some(&path), env(&[("RINGCAST_THREADS", "2")])).unwrap();
    assert_eq!(s.threads, 2);
    std::fs::remove_dir_all(&dir).unwrap();

    let e = Settings::load(Some(&dir), []).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("cannot read {}", dir.display())),
        "{e}"
    );
}

#[test]
fn a_bad_variable_is_named() {
    let e = Settings::load(None, env(&[("RINGCAST_THREADS", "four")])).unwrap_err();
    assert_eq!((e.key(), e.line()), (Some("threads"), None));
    assert_eq!(
        e.to_string(),
        "RINGCAST_THREADS (key `threads`): invalid value: string \"four\", expected a whole \
         number such as 64"
    );
    let e = Settings::load(None, env(&[("RINGCAST_PIN", "yes")])).unwrap_err();
    assert!(e.to_string().contains("expected a boolean"), "{e}");
    let e = Settings::load(None, env(&[("RINGCAST_MAX_FRAME", "big")])).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("RINGCAST_MAX_FRAME (key `max-frame`): 'big' is not a size"),
        "{e}"
    );
}

#[test]
fn keys_and_variables() {
    assert_eq!(Settings::keys().first(), Some(&"listen"));
    assert!(Settings::keys().contains(&"max-conns-per-ip"));
    assert_eq!(
        Settings::env_var("max-conns-per-ip"),
        "RINGCAST_MAX_CONNS_PER_IP"
    );
    for key in Settings::keys() {
        assert_eq!(
            Settings::key_of_env_var(&Settings::env_var(key)).as_deref(),
            Some(*key)
        );
    }
    assert_eq!(Settings::key_of_env_var("RINGCAST_URING"), None);
}

#[test]
fn values_that_do_not_fit_are_named() {
    let e = file_error("demo = true\nmax-topic-len = 4\n");
    assert_eq!(e.key(), Some("demo-symbols"));
    assert!(e.to_string().contains("'BTC-USD'"), "{e}");
    // Without the demo its symbols do not matter.
    Settings::from_toml_str("max-topic-len = 4").unwrap();
    let s = Settings {
        demo_rate: f64::NAN,
        ..Settings::default()
    };
    assert_eq!(s.check().unwrap_err().key(), Some("demo-rate"));
    // A message budget that no message of max-message fits in.
    let e = file_error("max-message = \"4MiB\"\nmessage-memory = \"1MiB\"\n");
    assert_eq!(e.key(), Some("message-memory"));
    assert!(e.to_string().contains("max-message"), "{e}");
    Settings::from_toml_str("max-message = \"4MiB\"\nmessage-memory = \"4032KiB\"").unwrap();
}
