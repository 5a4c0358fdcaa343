//! Runs wrk and reads its report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const THREADS: usize = 2;
pub const CONNECTIONS: usize = 64;

/// What one wrk run reports.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Responses received, whatever their status.
    pub answered: u64,
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Responses with a status of 400 or more.
    pub non_2xx: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
    /// Times a cache-miss script ran out of fresh tokens and started over (0 unless sized
    /// wrongly: then some "misses" were hits).
    pub tokens_wrapped: u64,
    /// Responses per HTTP status, for scripts that count them (`status 401: 123` lines).
    pub statuses: BTreeMap<u16, u64>,
}

/// wrk's threads and connections for one run.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub threads: usize,
    pub connections: usize,
}

/// The shape of the throughput runs: as many requests as the gateway takes.
pub const FULL: Shape = Shape {
    threads: THREADS,
    connections: CONNECTIONS,
};

/// What a run sends.
pub enum Load<'a> {
    /// A GET with fixed headers.
    Get { headers: &'a [(&'a str, &'a str)] },
    /// A Lua script (its path).
    Script(&'a Path),
}

/// `wrk -t2 -c64 -d<secs>s --latency` against `url`.
pub fn run(url: &str, secs: u64, load: Load<'_>) -> Report {
    run_shaped(url, secs, FULL, load)
}

/// `wrk -t<threads> -c<connections> -d<secs>s --latency` against `url`.
pub fn run_shaped(url: &str, secs: u64, shape: Shape, load: Load<'_>) -> Report {
    let mut cmd = Command::new("wrk");
    cmd.args([
        format!("-t{}", shape.threads),
        format!("-c{}", shape.connections),
        format!("-d{secs}s"),
        "--latency".into(),
    ]);
    match load {
        Load::Get { headers } => {
            for (name, value) in headers {
                cmd.arg("-H").arg(format!("{name}: {value}"));
            }
        }
        Load::Script(path) => {
            cmd.arg("-s").arg(path);
        }
    }
    cmd.arg(url);
    let out = cmd
        .output()
        .expect("running wrk (scripts/bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "wrk complained (a script error?):\n{stderr}"
    );
    parse(&text).unwrap_or_else(|| panic!("cannot read wrk's report:\n{text}"))
}

/// Parses wrk 4's text report.
pub fn parse(text: &str) -> Option<Report> {
    let mut r = Report::default();
    let mut seen = (false, false, false, false);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => {
                r.p50 = duration(v)?;
                seen.0 = true;
            }
            ["99%", v] => {
                r.p99 = duration(v)?;
                seen.1 = true;
            }
            [n, "requests", "in", ..] => {
                r.answered = n.parse().ok()?;
                seen.2 = true;
            }
            ["Requests/sec:", v] => {
                r.rps = v.parse().ok()?;
                seen.3 = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                r.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            ["tokens", "wrapped:", n] => r.tokens_wrapped = n.parse().ok()?,
            ["status", code, n] => {
                let code = code.trim_end_matches(':').parse().ok()?;
                r.statuses.insert(code, n.parse().ok()?);
            }
            _ => {}
        }
    }
    (seen == (true, true, true, true)).then_some(r)
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.00s`, `1.50m`.
fn duration(v: &str) -> Option<Duration> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Quotes `s` as a Lua long string.
fn lua_string(s: &str) -> String {
    assert!(!s.contains("]==]"), "cannot quote {s:?} for Lua");
    format!("[==[{s}]==]")
}

/// A script that sends one fixed POST (the same bytes every time).
pub fn post_script(path: &Path, headers: &[(&str, String)], body: &str) -> PathBuf {
    let mut lua = String::from("wrk.method = \"POST\"\n");
    lua.push_str(&format!("wrk.body = {}\n", lua_string(body)));
    for (name, value) in headers {
        lua.push_str(&format!(
            // The spaces matter: `t[[==[k]==]]` would be a call `t "==[k]=="`.
            "wrk.headers[ {} ] = {}\n",
            lua_string(name),
            lua_string(value)
        ));
    }
    std::fs::write(path, lua).expect("writing a wrk script");
    path.to_owned()
}

/// A script in which wrk thread `i` sends `GET <path>` with the bearer tokens of
/// `<prefix><i>.txt`, one per request, in order, and reports if it ran out and started over.
pub fn token_script(path: &Path, request_path: &str, token_prefix: &Path) -> PathBuf {
    let lua = format!(
        r#"local counter = 0
local threads = {{}}
function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end
function init(args)
  tokens = {{}}
  for line in io.lines({prefix} .. id .. ".txt") do
    tokens[#tokens + 1] = "Bearer " .. line
  end
  n = 0
  wrapped = 0
end
function request()
  n = n + 1
  if n > #tokens then
    n = 1
    wrapped = wrapped + 1
  end
  return wrk.format("GET", {path}, {{["Authorization"] = tokens[n]}})
end
function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do
    w = w + t:get("wrapped")
  end
  io.write("tokens wrapped: " .. w .. "\n")
end
"#,
        prefix = lua_string(&token_prefix.display().to_string()),
        path = lua_string(request_path),
    );
    std::fs::write(path, lua).expect("writing a wrk script");
    path.to_owned()
}

/// Lua that numbers the threads (`id`), counts responses per status in every thread and
/// prints the totals when the run ends (read back by [`parse`] into [`Report::statuses`]).
const COUNT_STATUSES: &str = r#"local threads = {}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do
      total[k] = (total[k] or 0) + v
    end
  end
  for k, v in pairs(total) do
    io.write("status " .. k .. ": " .. v .. "\n")
  end
end
"#;

/// A paced script: every connection sends `GET <path>` with `headers`, then waits `delay_ms`
/// before its next request, so `connections * 1000 / (delay_ms + latency)` requests a second.
/// wrk's latency is measured from send to answer, without the wait.
pub fn paced_script(
    path: &Path,
    request_path: &str,
    headers: &[(&str, &str)],
    delay_ms: u32,
) -> PathBuf {
    let mut lua = String::from(COUNT_STATUSES);
    lua.push_str("function init(args)\n  counts = {}\nend\n");
    lua.push_str(&format!("wrk.path = {}\n", lua_string(request_path)));
    for (name, value) in headers {
        lua.push_str(&format!(
            "wrk.headers[ {} ] = {}\n",
            lua_string(name),
            lua_string(value)
        ));
    }
    lua.push_str(&format!("function delay()\n  return {delay_ms}\nend\n"));
    std::fs::write(path, lua).expect("writing a wrk script");
    path.to_owned()
}

/// A paced flood of refused requests: `GET <path>` with `Bearer <token>`, from `X-Forwarded-For: <fixed_ip>` or, when `fixed_ip` is `None`, from a
/// new address of 198.18.0.0/15 on every request (a botnet: no address repeats often enough
/// to cool down).
pub fn flood_script(
    path: &Path,
    request_path: &str,
    token: &str,
    fixed_ip: Option<&str>,
    delay_ms: u32,
) -> PathBuf {
    let ip = match fixed_ip {
        Some(ip) => lua_string(ip),
        None => "\"198.\" .. (18 + math.floor(n / 65536) % 2) .. \".\" .. \
                 math.floor(n / 256) % 256 .. \".\" .. n % 256"
            .into(),
    };
    let lua = format!(
        r#"{COUNT_STATUSES}
function init(args)
  counts = {{}}
  n = id * 1000003
end
function request()
  n = n + 1
  return wrk.format("GET", {path}, {{
    ["Authorization"] = {token},
    ["X-Forwarded-For"] = {ip},
  }})
end
function delay()
  return {delay_ms}
end
"#,
        path = lua_string(request_path),
        token = lua_string(&format!("Bearer {token}")),
    );
    std::fs::write(path, lua).expect("writing a wrk script");
    path.to_owned()
}
