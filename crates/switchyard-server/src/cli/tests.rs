use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("switchyard").chain(args.iter().copied()))
}

#[test]
fn defaults_match_chp() {
    let cli = parse(&[]).unwrap();
    assert_eq!(cli.public_port(), 8000);
    assert_eq!(cli.api_port(), 8001);
    assert_eq!(cli.api_ip, "localhost");
    assert_eq!(cli.metrics_ip, "");
    assert!(cli.x_forward && cli.prepend_path && cli.include_prefix);
    assert_eq!(cli.keep_alive_timeout, 5000);
    assert_eq!(cli.log_level, LogLevel::Info);
    assert_eq!(cli.public_ip(), None);
}

#[test]
fn limit_defaults() {
    let cli = parse(&[]).unwrap();
    assert_eq!(cli.max_header_size, 65536);
    assert_eq!(cli.max_headers, 100);
    assert_eq!(cli.max_uri_length, 16384);
    assert_eq!(cli.body_idle_timeout, 300_000);
    assert_eq!(cli.pool_idle_timeout(), Duration::from_secs(90));
    let none = parse(&["--pool-idle-timeout", "0"]).unwrap();
    assert_eq!(none.pool_idle_timeout(), Duration::ZERO);
    assert_eq!(cli.request_head_timeout(), Some(Duration::from_secs(60)));
    let off = parse(&["--request-head-timeout", "0"]).unwrap();
    assert_eq!(off.request_head_timeout(), None);
    assert_eq!(cli.max_response_header_size, 65536);
    assert_eq!(cli.shutdown_timeout, 10_000);
    assert_eq!(
        parse(&["--shutdown-timeout", "0"])
            .unwrap()
            .shutdown_timeout,
        0
    );
}

/// Port 0 is a port the system picks, for each listener; the API's port + 1 follows
/// only a port that was given.
#[test]
fn port_zero_is_picked_by_the_system_and_api_follows_port() {
    let zero = parse(&["--port", "0"]).unwrap();
    assert_eq!((zero.public_port(), zero.api_port()), (0, 0));
    assert_eq!(parse(&["--port", "9000"]).unwrap().api_port(), 9001);
    assert_eq!(
        parse(&["--port", "9000", "--api-port", "0"])
            .unwrap()
            .api_port(),
        0
    );
    assert_eq!(parse(&["--socket", "/tmp/s"]).unwrap().api_port(), 8001);
}

#[test]
fn the_last_port_needs_an_api_port() {
    let err = parse(&["--port", "65535"]).unwrap().validate().unwrap_err();
    assert!(err.contains("--api-port"), "{err}");
    for ok in [
        &["--port", "65535", "--api-port", "9001"][..],
        &["--port", "65534"],
    ] {
        assert_eq!(parse(ok).unwrap().validate(), Ok(()), "{ok:?}");
    }
    assert_eq!(parse(&["--port", "65534"]).unwrap().api_port(), 65535);
}

#[test]
fn zero_keep_alive_timeout_is_the_default() {
    let five = Duration::from_secs(5);
    assert_eq!(parse(&[]).unwrap().keep_alive_timeout(), five);
    let zero = parse(&["--keep-alive-timeout", "0"]).unwrap();
    assert_eq!(zero.keep_alive_timeout(), five);
    let set = parse(&["--keep-alive-timeout", "300"]).unwrap();
    assert_eq!(set.keep_alive_timeout(), Duration::from_millis(300));
}

#[test]
fn custom_header_split_at_first_colon_and_trimmed() {
    let cli = parse(&[
        "--custom-header",
        " k2 : host:123 ",
        "--custom-header",
        "a:b",
    ])
    .unwrap();
    let pairs: Vec<(&str, &str)> = cli
        .custom_header
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(pairs, [("k2", "host:123"), ("a", "b")]);
    let err = parse(&["--custom-header", "nocolon"])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("A colon was expected in custom header: nocolon"),
        "{err}"
    );
    assert!(parse(&["--custom-header", ":x"]).is_err());
}

#[test]
fn no_flags_negate() {
    let cli = parse(&["--no-x-forward", "--no-prepend-path", "--no-include-prefix"]).unwrap();
    assert!(!cli.x_forward && !cli.prepend_path && !cli.include_prefix);
}

#[test]
fn conflicts_and_validation() {
    assert!(parse(&["--socket", "/s", "--port", "1"]).is_err());
    assert!(parse(&["--api-socket", "/s", "--api-port", "1"]).is_err());
    assert!(parse(&["--error-target", "http://x", "--error-path", "/e"]).is_err());
    assert!(parse(&["--storage-backend", "configurable-http-proxy-redis-backend"]).is_err());
    let redis = parse(&["--storage-backend", "redis://127.0.0.1"]).unwrap();
    assert!(redis.validate().is_ok());
    let unix = parse(&["--storage-backend", "unix:///run/redis.sock?db=2"]).unwrap();
    assert!(unix.validate().is_ok());
    let bad = parse(&["--storage-backend", "redis://h:notaport/0"]).unwrap();
    assert!(bad.validate().unwrap_err().contains("invalid Redis URL"));
    let sentinel = parse(&[
        "--storage-backend",
        "redis+sentinel://h1,h2:5000/mymaster/1",
    ]);
    assert!(sentinel.unwrap().validate().is_ok());
    let bad = parse(&["--storage-backend", "redis+sentinel://:secret@h1:26379"]).unwrap();
    let err = bad.validate().unwrap_err();
    assert!(
        err.contains("no master name") && !err.contains("secret"),
        "{err}"
    );
    let both = parse(&[
        "--storage-backend",
        "redis://h/0",
        "--state-file",
        "/tmp/s.json",
    ])
    .unwrap();
    assert!(both.validate().is_err());
    let redirect = parse(&["--redirect-port", "80"]).unwrap();
    assert!(redirect.validate().is_err());
    let half = parse(&["--client-ssl-key", "/k.pem"]).unwrap();
    assert!(half.validate().unwrap_err().contains("--client-ssl-cert"));
    assert!(parse(&["--log-level", "DEBUG"]).is_ok());
    assert!(parse(&["--log-level", "loud"]).is_err());
    assert!(parse(&["--max-header-size", "10"]).is_err());
    for bad in [
        ["--max-headers", "0"],
        ["--max-headers", "many"],
        ["--max-uri-length", "10"],
        ["--max-uri-length", "-1"],
        ["--body-idle-timeout", "-5"],
        ["--body-idle-timeout", "1s"],
        ["--pool-idle-timeout", "-1"],
        ["--pool-idle-timeout", "90s"],
        ["--max-response-header-size", "100"],
        ["--shutdown-timeout", "-1"],
        ["--shutdown-timeout", "10s"],
        ["--request-head-timeout", "-1"],
        ["--request-head-timeout", "1s"],
    ] {
        assert!(parse(&bad).is_err(), "{bad:?}");
    }
}
