//! `ringcast serve --config FILE`: the file under the `RINGCAST_*` variables under the
//! flags, errors that name the key (and its line), and `ringcast config default`.

use crate::binary;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use binary::{Running, TempFile, ringcast};
use ringcast::server::Settings;

/// The HTTP status an upgrade to `path` gets (101 when accepted).
fn upgrade_status(addr: SocketAddr, path: &str) -> u16 {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match tungstenite::client(format!("ws://{addr}{path}"), stream) {
        Ok((_, response)) => response.status().as_u16(),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            response.status().as_u16()
        }
        Err(e) => panic!("upgrade to {path}: {e}"),
    }
}

/// Each key comes from the highest layer that sets it: `publish-token` from the file,
/// `max-topics` from the environment (over the file, and not undone by the flag's default),
/// `threads` and `listen` from the flags (over both).
#[test]
fn flags_override_the_environment_which_overrides_the_file() {
    let file = TempFile::new(
        "ringcast.toml",
        r#"
        listen = "127.0.0.1:1"
        threads = 1
        max-topics = 1
        publish-token = "from-file"
        "#,
    );
    let mut cmd = ringcast("serve --listen 127.0.0.1:0 --threads 3 --no-pin --backend epoll");
    cmd.args(["--config", file.arg()])
        .env("RINGCAST_THREADS", "2")
        .env("RINGCAST_MAX_TOPICS", "2")
        .env("RINGCAST_LISTEN", "127.0.0.1:2");
    let server = Running::start(cmd);
    assert!(
        server.banner.contains("(3 reactors, epoll)"),
        "{}",
        server.banner
    );
    assert_eq!(upgrade_status(server.addr, "/sub/a,b"), 101);
    assert_eq!(upgrade_status(server.addr, "/sub/a,b,c"), 400);
    assert_eq!(upgrade_status(server.addr, "/pub/a"), 401);
    assert_eq!(upgrade_status(server.addr, "/pub/a?token=from-file"), 101);
}

/// `ringcast serve --config FILE` with FILE broken in `text`: exit 2 and `expected` on
/// stderr.
fn refused(text: &str, env: &[(&str, &str)], expected: &[&str]) {
    let file = TempFile::new("ringcast.toml", text);
    let out = ringcast("serve --listen 127.0.0.1:0")
        .args(["--config", file.arg()])
        .envs(env.iter().copied())
        .output()
        .expect("run ringcast");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}: {err}");
    for part in expected {
        let part = part.replace("FILE", file.arg());
        assert!(err.contains(&part), "{text}: no {part:?} in {err}");
    }
}

#[test]
fn an_unknown_key_is_an_error_naming_it_and_its_line() {
    refused(
        "threads = 1\n\nmax_lag = \"1MiB\"\n",
        &[],
        &["ringcast: FILE:3: key `max_lag`: unknown key (did you mean `max-lag`?"],
    );
}

#[test]
fn a_bad_value_is_an_error_naming_the_key_its_line_and_the_form() {
    refused(
        "# limits\nmax-message = \"huge\"\n",
        &[],
        &["FILE:2: key `max-message`: 'huge' is not a size (examples: 1000, 64KiB, 16MiB)"],
    );
    refused(
        "slow-consumer = \"sometimes\"\n",
        &[],
        &[
            "FILE:1: key `slow-consumer`",
            "use close, drop-oldest or conflate",
        ],
    );
}

#[test]
fn a_value_of_the_wrong_type_is_an_error_naming_the_key_its_line_and_the_form() {
    refused(
        "\n\nthreads = \"four\"\n",
        &[],
        &["FILE:3: key `threads`: invalid type: string \"four\", expected a whole number"],
    );
    refused(
        "max-lag = 4MiB\n",
        &[],
        &["FILE:1: invalid TOML: string values must be quoted"],
    );
}

/// A topic name limit a `ringcast.v1` binary envelope cannot carry (its length is one
/// byte), or 0, from the file or a flag.
#[test]
fn a_topic_name_limit_outside_1_to_255_is_an_error_naming_the_key() {
    let why = "is not a length from 1 to 255 bytes (a ringcast.v1 binary envelope holds the \
               topic's length in one byte)";
    refused(
        "max-topic-len = 256\n",
        &[],
        &["key `max-topic-len`: 256 ", why],
    );
    for flag in ["0", "300"] {
        let out = ringcast("serve --listen 127.0.0.1:0 --max-topic-len")
            .arg(flag)
            .output()
            .expect("run ringcast");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(
            err.contains(&format!("key `max-topic-len`: {flag} {why}")),
            "{flag}: {err}"
        );
    }
}

/// A token that is empty (say, from an unset variable in a script) would let no one in.
#[test]
fn an_empty_token_is_an_error_naming_the_key() {
    refused(
        "metrics-token = \"\"\n",
        &[],
        &[
            "key `metrics-token`: an empty token would let no one in (leave the key out to need none)",
        ],
    );
    let out = ringcast("serve --listen 127.0.0.1:0 --publish-token=")
        .output()
        .expect("run ringcast");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("key `publish-token`: an empty token would let no one in"),
        "{err}"
    );
}

/// An inbox of 0 or too large to allocate, a duration over a year (a deadline that far
/// ahead would overflow the clock), from the file or a flag.
#[test]
fn an_inbox_or_a_duration_out_of_range_is_an_error_naming_the_key() {
    refused(
        "inbox = 0\n",
        &[],
        &["key `inbox`: 0 is not a number of publications from 1 to 16777216"],
    );
    refused(
        "idle-timeout = 31536001\n",
        &[],
        &["FILE:1: key `idle-timeout`: '31536001' is over 365 days, the longest duration taken"],
    );
    for (flag, value, expected) in [
        (
            "--inbox",
            "18446744073709551615",
            "key `inbox`: 18446744073709551615 is not a number of publications from 1 to \
             16777216",
        ),
        (
            "--idle-timeout",
            "18446744073709551615s",
            "'--idle-timeout <IDLE_TIMEOUT>': '18446744073709551615s' is over 365 days",
        ),
        (
            "--history-ttl",
            "525601m",
            "'--history-ttl <HISTORY_TTL>': '525601m' is over 365 days",
        ),
    ] {
        let out = ringcast("serve --listen 127.0.0.1:0")
            .args([flag, value])
            .output()
            .expect("run ringcast");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains(expected), "{flag}: {err}");
    }
}

#[test]
fn a_bad_variable_or_a_missing_file_is_an_error_naming_it() {
    refused(
        "",
        &[("RINGCAST_IDLE_TIMEOUT", "soon")],
        &["RINGCAST_IDLE_TIMEOUT (key `idle-timeout`): 'soon' is not a duration"],
    );
    let out = ringcast("serve --config /nonexistent/ringcast.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read /nonexistent/ringcast.toml: No such file"),
        "{out:?}"
    );
}

/// The printed default file reads back as exactly the defaults, and the server starts
/// from it.
#[test]
fn config_default_prints_a_file_that_reads_back_as_the_defaults() {
    let out = ringcast("config default").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(text, Settings::DEFAULT_TOML);
    assert_eq!(Settings::from_toml_str(&text).unwrap(), Settings::default());

    let file = TempFile::new("ringcast.toml", &text);
    let mut cmd = ringcast("serve --listen 127.0.0.1:0 --threads 1 --no-pin");
    cmd.args(["--config", file.arg()]);
    let server = Running::start(cmd);
    assert_eq!(upgrade_status(server.addr, "/sub"), 101);
}

#[test]
fn serve_help_explains_the_config_file_and_the_log_format() {
    let out = ringcast("serve --help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for part in [
        "--config <FILE>",
        "RINGCAST_MAX_MESSAGE",
        "ringcast config default",
        "--log-format",
    ] {
        assert!(help.contains(part), "serve --help lacks {part}:\n{help}");
    }
}
