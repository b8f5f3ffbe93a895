//! `sprite-env curl`: the user's curl arguments rewritten to reach the
//! daemon: the socket, the `http://sprite` host before an API path wherever
//! it stands, a JSON `Content-Type` for a body without one.
//!
//! Pure: arguments in, arguments out. Knows curl's options (7.88 to 8.x)
//! well enough to tell an option's value from a URL.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::api::EVENTS_PATH;

/// The URL prefix `sprite-env curl` puts before an API path.
pub const BASE_URL: &str = "http://sprite";

/// Why `sprite-env curl` refused its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CurlArgsError {
    /// No URL argument at all.
    NoPath,
    /// A URL argument that is not an API path.
    NotAnApiPath(String),
    /// An option whose per-URL reset would drop the socket (`--next`).
    Unsupported(String),
}

impl fmt::Display for CurlArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CurlArgsError::NoPath => write!(
                f,
                "no API path given; name one anywhere among the curl arguments, e.g. `sprite-env curl /v1/tasks`"
            ),
            CurlArgsError::NotAnApiPath(arg) => write!(
                f,
                "{arg:?} is not an API path; give a path such as /v1/tasks or /v1/tasks/agent \
                 (the socket and the http://sprite host are filled in). If it is the value of a \
                 curl option, write it as --option=value"
            ),
            CurlArgsError::Unsupported(option) => write!(
                f,
                "{option} is not supported by sprite-env curl (it would drop the socket for the next URL); run sprite-env curl once per request"
            ),
        }
    }
}

impl std::error::Error for CurlArgsError {}

/// curl's short options that take a value (curl 7.88 to 8.x).
const CURL_SHORT_WITH_VALUE: &[u8] = b"AbCcDdEeFHKmoPQrTtUuwXxYyz";

/// curl's long options that take a value (curl 7.88 to 8.x). An option that
/// is missing here would have its value taken for a URL: a value that does
/// not start with `/` is then refused with a message, never sent somewhere.
const CURL_LONG_WITH_VALUE: &[&str] = &[
    "abstract-unix-socket",
    "alt-svc",
    "aws-sigv4",
    "cacert",
    "capath",
    "cert",
    "cert-type",
    "ciphers",
    "config",
    "connect-timeout",
    "connect-to",
    "continue-at",
    "cookie",
    "cookie-jar",
    "create-file-mode",
    "crlfile",
    "curves",
    "data",
    "data-ascii",
    "data-binary",
    "data-raw",
    "data-urlencode",
    "delegation",
    "dns-interface",
    "dns-ipv4-addr",
    "dns-ipv6-addr",
    "dns-servers",
    "doh-url",
    "dump-header",
    "ech",
    "egd-file",
    "engine",
    "etag-compare",
    "etag-save",
    "expect100-timeout",
    "form",
    "form-string",
    "ftp-account",
    "ftp-alternative-to-user",
    "ftp-method",
    "ftp-port",
    "ftp-ssl-ccc-mode",
    "happy-eyeballs-timeout-ms",
    "haproxy-clientip",
    "header",
    "hostpubmd5",
    "hostpubsha256",
    "hsts",
    "interface",
    "ip-tos",
    "json",
    "keepalive-cnt",
    "keepalive-time",
    "key",
    "key-type",
    "knownhosts",
    "krb",
    "libcurl",
    "limit-rate",
    "local-port",
    "login-options",
    "mail-auth",
    "mail-from",
    "mail-rcpt",
    "max-filesize",
    "max-redirs",
    "max-time",
    "netrc-file",
    "noproxy",
    "oauth2-bearer",
    "output",
    "output-dir",
    "parallel-max",
    "pass",
    "pinnedpubkey",
    "preproxy",
    "proto",
    "proto-default",
    "proto-redir",
    "proxy",
    "proxy-cacert",
    "proxy-capath",
    "proxy-cert",
    "proxy-cert-type",
    "proxy-ciphers",
    "proxy-crlfile",
    "proxy-header",
    "proxy-key",
    "proxy-key-type",
    "proxy-pass",
    "proxy-pinnedpubkey",
    "proxy-service-name",
    "proxy-tls13-ciphers",
    "proxy-tlsauthtype",
    "proxy-tlspassword",
    "proxy-tlsuser",
    "proxy-user",
    "proxy1.0",
    "pubkey",
    "quote",
    "random-file",
    "range",
    "rate",
    "referer",
    "request",
    "request-target",
    "resolve",
    "retry",
    "retry-delay",
    "retry-max-time",
    "sasl-authzid",
    "service-name",
    "sigalgs",
    "socks4",
    "socks4a",
    "socks5",
    "socks5-gssapi-service",
    "socks5-hostname",
    "speed-limit",
    "speed-time",
    "ssl-sessions",
    "stderr",
    "telnet-option",
    "tftp-blksize",
    "time-cond",
    "tls-max",
    "tls13-ciphers",
    "tlsauthtype",
    "tlspassword",
    "tlsuser",
    "trace",
    "trace-ascii",
    "trace-config",
    "unix-socket",
    "upload-file",
    "upload-flags",
    "url",
    "url-query",
    "user",
    "user-agent",
    "variable",
    "vlan-priority",
    "write-out",
];

/// The long name of a short option this module cares about.
fn short_to_long(option: u8) -> &'static str {
    match option {
        b'd' => "data",
        b'F' => "form",
        b'H' => "header",
        b'T' => "upload-file",
        _ => "",
    }
}

/// What the user's curl arguments say, as far as the rewriting cares.
#[derive(Debug, Default)]
struct CurlSeen {
    paths: usize,
    body: bool,
    content_type: bool,
    /// The user chose curl's output mode: silent or not, progress, verbosity.
    output_mode: bool,
    /// A URL is the event stream.
    events: bool,
    /// `-N`/`--no-buffer` given.
    no_buffer: bool,
}

/// curl's flags that choose what it prints besides the body; with none of
/// them, `sprite-env curl` adds `-sS` (no progress meter, errors shown).
const CURL_OUTPUT_FLAGS: &[&str] = &[
    "silent",
    "no-silent",
    "show-error",
    "no-show-error",
    "verbose",
    "no-verbose",
    "progress-bar",
    "no-progress-bar",
    "no-progress-meter",
    "trace",
    "trace-ascii",
];

impl CurlSeen {
    /// Notes a rewritten URL argument.
    fn url(&mut self, url: &OsStr) {
        self.paths += 1;
        let events = format!("{BASE_URL}{EVENTS_PATH}");
        let rest = url.as_bytes().strip_prefix(events.as_bytes());
        if rest.is_some_and(|rest| rest.is_empty() || b"?/".contains(&rest[0])) {
            self.events = true;
        }
    }

    /// Notes a long option (without `--`, `expand-` stripped).
    fn long_flag(&mut self, name: &str) {
        if CURL_OUTPUT_FLAGS.contains(&name) {
            self.output_mode = true;
        }
        if name == "no-buffer" {
            self.no_buffer = true;
        }
    }

    /// Notes a short flag of a cluster.
    fn short_flag(&mut self, option: u8) {
        match option {
            b's' | b'S' | b'v' | b'#' => self.output_mode = true,
            b'N' => self.no_buffer = true,
            _ => {}
        }
    }

    /// Notes an option (by long name, `expand-` stripped) and its value.
    fn option(&mut self, name: &str, value: &[u8]) {
        match name {
            "data" | "data-ascii" | "data-binary" | "data-raw" | "data-urlencode"
            | "upload-file" => self.body = true,
            // curl sets its own type for these.
            "json" | "form" | "form-string" => self.content_type = true,
            "header" => {
                let header_name = value
                    .split(|b| *b == b':' || *b == b';')
                    .next()
                    .unwrap_or_default();
                if header_name
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"content-type")
                {
                    self.content_type = true;
                }
            }
            _ => {}
        }
    }
}

/// Rewrites one URL argument: an API path gets the host; `http://sprite`
/// URLs pass; anything else is refused.
fn rewrite_url(arg: &OsStr) -> Result<OsString, CurlArgsError> {
    let bytes = arg.as_bytes();
    if bytes.starts_with(b"/") {
        let mut url = BASE_URL.as_bytes().to_vec();
        url.extend_from_slice(bytes);
        return Ok(OsString::from_vec(url));
    }
    if bytes == BASE_URL.as_bytes() || bytes.starts_with(format!("{BASE_URL}/").as_bytes()) {
        return Ok(arg.to_owned());
    }
    Err(CurlArgsError::NotAnApiPath(
        arg.to_string_lossy().into_owned(),
    ))
}

/// The arguments to run `curl` with for `sprite-env curl ARGS`: the socket
/// first; `-sS` unless the user chose curl's output mode (`-s`, `-S`, `-v`,
/// `-#`, `--progress-bar`, `--trace`…); `-N` for the event stream; a JSON
/// `Content-Type` if a body is sent without one; then the
/// user's arguments with every API path (a URL argument starting with `/`,
/// wherever it stands, or the value of `--url`) turned into
/// `http://sprite/PATH`.
///
/// # Errors
/// [`CurlArgsError`] when there is no URL argument, a URL argument is not an
/// API path, or `--next` is used.
pub fn curl_args(user_args: &[OsString], socket: &Path) -> Result<Vec<OsString>, CurlArgsError> {
    let mut seen = CurlSeen::default();
    let mut rewritten = Vec::with_capacity(user_args.len());
    let mut options_done = false;
    let mut at = 0;
    while at < user_args.len() {
        let arg = user_args[at].as_os_str();
        let bytes = arg.as_bytes();
        at += 1;
        if options_done || !bytes.starts_with(b"-") || bytes == b"-" {
            let url = rewrite_url(arg)?;
            seen.url(&url);
            rewritten.push(url);
            continue;
        }
        if bytes == b"--" {
            options_done = true;
            rewritten.push(arg.to_owned());
            continue;
        }
        if let Some(long) = bytes.strip_prefix(b"--") {
            let (name, inline) = match long.iter().position(|b| *b == b'=') {
                Some(eq) => (&long[..eq], Some(&long[eq + 1..])),
                None => (long, None),
            };
            let name = String::from_utf8_lossy(name);
            let name = name.strip_prefix("expand-").unwrap_or(&name);
            if name == "next" {
                return Err(CurlArgsError::Unsupported("--next".into()));
            }
            seen.long_flag(name);
            if !CURL_LONG_WITH_VALUE.contains(&name) {
                rewritten.push(arg.to_owned());
                continue;
            }
            match inline {
                Some(value) => {
                    seen.option(name, value);
                    if name == "url" {
                        let url = rewrite_url(OsStr::from_bytes(value))?;
                        seen.url(&url);
                        let mut joined = b"--url=".to_vec();
                        joined.extend_from_slice(url.as_bytes());
                        rewritten.push(OsString::from_vec(joined));
                    } else {
                        rewritten.push(arg.to_owned());
                    }
                }
                None => {
                    rewritten.push(arg.to_owned());
                    // A missing value is curl's to report.
                    if let Some(value) = user_args.get(at) {
                        at += 1;
                        seen.option(name, value.as_bytes());
                        if name == "url" {
                            let url = rewrite_url(value)?;
                            seen.url(&url);
                            rewritten.push(url);
                        } else {
                            rewritten.push(value.clone());
                        }
                    }
                }
            }
            continue;
        }
        // A cluster of short options: `-sS`, `-XPOST`, `-sX POST`.
        rewritten.push(arg.to_owned());
        for (index, &option) in bytes.iter().enumerate().skip(1) {
            if option == b':' {
                return Err(CurlArgsError::Unsupported("-: (--next)".into()));
            }
            seen.short_flag(option);
            if CURL_SHORT_WITH_VALUE.contains(&option) {
                let rest = &bytes[index + 1..];
                if !rest.is_empty() {
                    seen.option(short_to_long(option), rest);
                } else if let Some(value) = user_args.get(at) {
                    at += 1;
                    seen.option(short_to_long(option), value.as_bytes());
                    rewritten.push(value.clone());
                }
                break;
            }
        }
    }
    if seen.paths == 0 {
        return Err(CurlArgsError::NoPath);
    }
    let mut args = vec![
        OsString::from("--unix-socket"),
        socket.as_os_str().to_owned(),
    ];
    if !seen.output_mode {
        // No progress meter in logs and pipes; errors still said.
        args.push("-sS".into());
    }
    if seen.events && !seen.no_buffer {
        // Each event as it comes, not when curl's buffer fills.
        args.push("-N".into());
    }
    if seen.body && !seen.content_type {
        args.push("-H".into());
        args.push("Content-Type: application/json".into());
    }
    args.extend(rewritten);
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    const SOCKET: &str = "/s/api.sock";
    const JSON: &str = "Content-Type: application/json";

    #[test]
    fn curl_paths_anywhere_get_the_socket_and_host() {
        let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (vec!["/v1/tasks"], vec!["http://sprite/v1/tasks"]),
            (
                vec!["-X", "POST", "/v1/tasks", "-d", "{}"],
                vec![
                    "-H",
                    JSON,
                    "-X",
                    "POST",
                    "http://sprite/v1/tasks",
                    "-d",
                    "{}",
                ],
            ),
            (
                vec!["/v1/tasks", "-X", "POST", "-d", "{}"],
                vec![
                    "-H",
                    JSON,
                    "http://sprite/v1/tasks",
                    "-X",
                    "POST",
                    "-d",
                    "{}",
                ],
            ),
            (
                vec!["-X", "PUT", "-d", "{}", "/v1/tasks/a"],
                vec![
                    "-H",
                    JSON,
                    "-X",
                    "PUT",
                    "-d",
                    "{}",
                    "http://sprite/v1/tasks/a",
                ],
            ),
            // Values that look like paths stay values.
            (
                vec!["-o", "/tmp/out", "-H", "X-A: 1", "/v1/tasks"],
                vec!["-o", "/tmp/out", "-H", "X-A: 1", "http://sprite/v1/tasks"],
            ),
            (
                vec!["--output", "/tmp/out", "/v1/tasks", "--cacert", "/etc/ca"],
                vec![
                    "--output",
                    "/tmp/out",
                    "http://sprite/v1/tasks",
                    "--cacert",
                    "/etc/ca",
                ],
            ),
            // Clusters: -sX POST, -XPOST, -sd{}.
            (
                vec!["-sX", "POST", "/v1/tasks", "-sd{}"],
                vec!["-H", JSON, "-sX", "POST", "http://sprite/v1/tasks", "-sd{}"],
            ),
            (
                vec!["-XDELETE", "/v1/tasks/a"],
                vec!["-XDELETE", "http://sprite/v1/tasks/a"],
            ),
            // A type of its own, or a body type curl sets: nothing added.
            (
                vec!["-H", "content-type: text/plain", "-d", "x", "/v1/tasks"],
                vec![
                    "-H",
                    "content-type: text/plain",
                    "-d",
                    "x",
                    "http://sprite/v1/tasks",
                ],
            ),
            (
                vec![
                    "--header=Content-Type: application/json",
                    "--data=x",
                    "/v1/tasks",
                ],
                vec![
                    "--header=Content-Type: application/json",
                    "--data=x",
                    "http://sprite/v1/tasks",
                ],
            ),
            (
                vec!["--json", "{}", "/v1/tasks"],
                vec!["--json", "{}", "http://sprite/v1/tasks"],
            ),
            (
                vec!["--data-binary", "@body.json", "/v1/tasks"],
                vec![
                    "-H",
                    JSON,
                    "--data-binary",
                    "@body.json",
                    "http://sprite/v1/tasks",
                ],
            ),
            // --url, --expand-*, full sprite URLs, and after `--`.
            (
                vec!["--url", "/v1/tasks"],
                vec!["--url", "http://sprite/v1/tasks"],
            ),
            (
                vec!["--url=/v1/status"],
                vec!["--url=http://sprite/v1/status"],
            ),
            (
                vec!["--expand-data", "{}", "/v1/tasks"],
                vec!["-H", JSON, "--expand-data", "{}", "http://sprite/v1/tasks"],
            ),
            (
                vec!["http://sprite/v1/tasks"],
                vec!["http://sprite/v1/tasks"],
            ),
            (
                vec!["-s", "--", "/v1/tasks"],
                vec!["-s", "--", "http://sprite/v1/tasks"],
            ),
            // Unknown flags without values pass.
            (
                vec!["--fail-with-body", "-sSf", "/metrics"],
                vec!["--fail-with-body", "-sSf", "http://sprite/metrics"],
            ),
        ];
        for (input, expected) in cases {
            let got = curl_args(&os(&input), Path::new(SOCKET))
                .unwrap_or_else(|e| panic!("{input:?}: {e}"));
            let mut want = vec!["--unix-socket", SOCKET];
            // The cases with their own -s choose the output mode (the rule
            // has its own table below); the others get -sS.
            if !input.iter().any(|a| a.starts_with("-s")) {
                want.push("-sS");
            }
            want.extend(expected);
            assert_eq!(strings(got), want, "{input:?}");
        }
    }

    #[test]
    fn curl_quiet_unless_asked_and_unbuffered_for_events() {
        let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (vec!["/v1/tasks"], vec!["-sS"]),
            (vec!["-v", "/v1/tasks"], vec![]),
            (vec!["-fv", "/v1/tasks"], vec![]),
            (vec!["-#", "/v1/tasks"], vec![]),
            (vec!["--progress-bar", "/v1/tasks"], vec![]),
            (vec!["--verbose", "/v1/tasks"], vec![]),
            (vec!["--trace-ascii", "-", "/v1/tasks"], vec![]),
            (vec!["--no-progress-meter", "/v1/tasks"], vec![]),
            (vec!["-S", "/v1/tasks"], vec![]),
            (vec!["-i", "/v1/tasks"], vec!["-sS"]),
            // A value is not a flag: -H's `v` does not make it verbose.
            (vec!["-Hv: 1", "/v1/tasks"], vec!["-sS"]),
            (vec!["-o", "-v", "/v1/tasks"], vec!["-sS"]),
            (vec!["/v1/events"], vec!["-sS", "-N"]),
            (vec!["/v1/events?since=3"], vec!["-sS", "-N"]),
            (vec!["--url", "/v1/events"], vec!["-sS", "-N"]),
            (vec!["-sN", "/v1/events"], vec![]),
            (vec!["--no-buffer", "/v1/events"], vec!["-sS"]),
            (vec!["/v1/eventsx"], vec!["-sS"]),
        ];
        for (input, added) in cases {
            let got = strings(curl_args(&os(&input), Path::new(SOCKET)).unwrap());
            let mut want = vec!["--unix-socket", SOCKET];
            want.extend(added);
            assert_eq!(&got[..want.len()], want, "{input:?}");
            assert_eq!(got.len(), want.len() + input.len(), "{input:?}: {got:?}");
        }
    }

    #[test]
    fn curl_refusals() {
        let cases: Vec<(Vec<&str>, CurlArgsError)> = vec![
            (vec![], CurlArgsError::NoPath),
            (vec!["-s", "-X", "POST"], CurlArgsError::NoPath),
            (vec!["-d", "{}", "-X", "POST"], CurlArgsError::NoPath),
            (
                vec!["-X", "POST", "v1/tasks"],
                CurlArgsError::NotAnApiPath("v1/tasks".into()),
            ),
            (
                vec!["https://example.com/v1/tasks"],
                CurlArgsError::NotAnApiPath("https://example.com/v1/tasks".into()),
            ),
            (
                vec!["http://spritely/v1/tasks"],
                CurlArgsError::NotAnApiPath("http://spritely/v1/tasks".into()),
            ),
            (
                vec!["--url", "tasks"],
                CurlArgsError::NotAnApiPath("tasks".into()),
            ),
            (vec!["-"], CurlArgsError::NotAnApiPath("-".into())),
            (
                vec!["/v1/tasks", "--next", "/v1/tasks"],
                CurlArgsError::Unsupported("--next".into()),
            ),
            (
                vec!["/v1/tasks", "-:", "/v1/tasks"],
                CurlArgsError::Unsupported("-: (--next)".into()),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                curl_args(&os(&input), Path::new(SOCKET)),
                Err(expected),
                "{input:?}"
            );
        }
    }

    #[test]
    fn curl_keeps_non_utf8_arguments() {
        let odd = OsString::from_vec(b"-H\xff".to_vec());
        let got = curl_args(&[odd.clone(), "/v1/tasks".into()], Path::new(SOCKET)).unwrap();
        assert_eq!(got[3], odd, "after the socket and -sS");
    }
}
