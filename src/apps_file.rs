//! The apps file of `stsgate apply` / `stsgate export`: TOML, one `[apps.<slug>]` table per
//! app (see the README's "Automation" section and `examples/apps.toml`).
//!
//! Secrets are never written in it: `secret_key_env = "VAR"` or `secret_key_file = "path"`
//! (and `hs_secret_env` / `hs_secret_file` under `[apps.<slug>.jwt]`) name where they are;
//! left out, the stored secret is kept. Relative secret files are read from the apps file's
//! directory.

use std::path::{Path, PathBuf};

use policy_store::AppSpec;
use secrecy::SecretString;
use toml::{Table, Value};

/// Every problem found in an apps file, one a line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct FileErrors(pub Vec<FileError>);

/// One problem in an apps file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Not TOML. The offending line is never shown (it could hold a pasted secret): the
    /// position, the parser's description and the key on that line.
    #[error("{0}")]
    Syntax(String),
    /// A problem with one field, named as `apps.<slug>.<field>`.
    #[error("{field}: {problem}")]
    Field { field: String, problem: Problem },
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("must be a table of [apps.<slug>] tables")]
    AppsNotATable,
    #[error("unknown top-level key; the file holds only [apps.<slug>] tables")]
    UnknownTopLevelKey,
    #[error("must be a table ([apps.<slug>])")]
    AppNotATable,
    #[error("the slug is the table's name ([apps.<slug>]); remove the key")]
    SlugKey,
    /// serde's word on the app's settings (an unknown field, a wrong type).
    #[error("{0}")]
    Settings(String),
    #[error("secrets are never written in the file; use {0}_env = \"VAR\" or {0}_file = \"path\"")]
    SecretInClear(String),
    #[error("give a non-empty string")]
    NotAString,
    #[error("give {0}_env or {0}_file, not both")]
    BothReferences(String),
    /// The value is not shown: it may be a pasted secret.
    #[error(
        "is not a valid environment variable name (letters, digits and _, not starting with a digit)"
    )]
    BadEnvName,
    /// The name is shown only when it reads like one (upper case, digits and _): a mixed-case
    /// "name" may be a pasted secret.
    #[error("the environment variable {} is not set", .0.as_deref().unwrap_or("it names"))]
    EnvNotSet(Option<String>),
    /// The path is not shown: nothing is there, and it may be a pasted secret.
    #[error(
        "the file it names does not exist (a relative path is read from the apps file's directory)"
    )]
    NoSuchFile,
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the secret is empty")]
    EmptySecret,
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what `secret_key_env` / `hs_secret_env` may hold.
fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An environment variable name that is safe to show in an error: the conventional upper-case
/// form. A SecretKey is mixed case, so a secret pasted in its place is never echoed.
fn shown_env_name(s: &str) -> Option<String> {
    (is_env_name(s) && !s.chars().any(|c| c.is_ascii_lowercase())).then(|| s.to_owned())
}

/// serde's message without the string value it quotes (`invalid type: string "…", expected
/// …`): a string in the wrong place may be a pasted secret.
fn without_strings(message: &str) -> String {
    const QUOTED: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(QUOTED) {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let after = &rest[at + QUOTED.len()..];
        // The value ends at the last `", expected` (it may hold quotes itself).
        match after.rfind("\", expected") {
            Some(end) => rest = &after[end + 1..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// A TOML syntax error without the offending line (it could hold a cleartext secret): the
/// line and column, the parser's description, and the key written on that line, if any.
fn syntax_error(text: &str, e: &toml::de::Error) -> FileError {
    let message = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return FileError::Syntax(format!("not valid TOML: {message}"));
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
        });
    FileError::Syntax(match key {
        Some(key) => {
            format!("not valid TOML at line {line}, column {column} (key {key}): {message}")
        }
        None => format!("not valid TOML at line {line}, column {column}: {message}"),
    })
}

fn field_error(field: impl Into<String>, problem: Problem) -> FileError {
    FileError::Field {
        field: field.into(),
        problem,
    }
}

/// Where a secret comes from.
struct SecretRef {
    /// `apps.photos.secret_key_env`: what an error names.
    field: String,
    source: Source,
}

enum Source {
    Env(String),
    File(String),
}

/// Takes `<name>_env` / `<name>_file` out of `table`; a secret written in clear is an error.
fn take_secret_ref(
    table: &mut Table,
    name: &str,
    at: &str,
    errors: &mut Vec<FileError>,
) -> Option<SecretRef> {
    if table.remove(name).is_some() {
        errors.push(field_error(
            format!("{at}{name}"),
            Problem::SecretInClear(name.to_owned()),
        ));
    }
    let env_key = format!("{name}_env");
    let file_key = format!("{name}_file");
    let text = |v: Value, key: &str, errors: &mut Vec<FileError>| match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => {
            errors.push(field_error(format!("{at}{key}"), Problem::NotAString));
            None
        }
    };
    let env = table
        .remove(&env_key)
        .and_then(|v| text(v, &env_key, errors));
    let file = table
        .remove(&file_key)
        .and_then(|v| text(v, &file_key, errors));
    let env = env.filter(|var| {
        let valid = is_env_name(var);
        if !valid {
            errors.push(field_error(format!("{at}{env_key}"), Problem::BadEnvName));
        }
        valid
    });
    match (env, file) {
        (Some(_), Some(_)) => {
            errors.push(field_error(
                format!("{at}{name}"),
                Problem::BothReferences(name.to_owned()),
            ));
            None
        }
        (Some(var), None) => Some(SecretRef {
            field: format!("{at}{env_key}"),
            source: Source::Env(var),
        }),
        (None, Some(path)) => Some(SecretRef {
            field: format!("{at}{file_key}"),
            source: Source::File(path),
        }),
        (None, None) => None,
    }
}

impl SecretRef {
    fn resolve(
        &self,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SecretString, FileError> {
        let value = match &self.source {
            Source::Env(var) => env(var)
                .ok_or_else(|| field_error(&self.field, Problem::EnvNotSet(shown_env_name(var))))?,
            Source::File(path) => {
                let path = base_dir.join(path);
                if std::fs::symlink_metadata(&path).is_err() {
                    return Err(field_error(&self.field, Problem::NoSuchFile));
                }
                warn_if_shared(&path);
                std::fs::read_to_string(&path).map_err(|source| {
                    field_error(&self.field, Problem::Unreadable { path, source })
                })?
            }
        };
        // A file usually ends with a newline; the secret does not.
        let value = value.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(field_error(&self.field, Problem::EmptySecret));
        }
        Ok(SecretString::from(value.to_owned()))
    }
}

/// Warns (on stderr) when a file holding a secret can be read by other users.
pub fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: {} holds a secret and other users can read it: chmod 600 it",
                path.display()
            );
        }
    }
}

/// Parses an apps file and resolves its secret references (`env` looks up a variable; a
/// relative secret file is read from `base_dir`). Every problem is reported, not just the
/// first.
pub fn parse(
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<AppSpec>, FileErrors> {
    let mut doc: Table = text
        .parse()
        .map_err(|e: toml::de::Error| FileErrors(vec![syntax_error(text, &e)]))?;
    let mut errors = Vec::new();
    let apps = match doc.remove("apps") {
        Some(Value::Table(t)) => t,
        Some(_) => {
            return Err(FileErrors(vec![field_error(
                "apps",
                Problem::AppsNotATable,
            )]));
        }
        None => Table::new(),
    };
    for key in doc.keys() {
        errors.push(field_error(key, Problem::UnknownTopLevelKey));
    }
    let mut specs = Vec::with_capacity(apps.len());
    for (slug, app) in apps {
        let at = format!("apps.{slug}.");
        let Value::Table(mut table) = app else {
            errors.push(field_error(format!("apps.{slug}"), Problem::AppNotATable));
            continue;
        };
        if table.contains_key("slug") {
            errors.push(field_error(format!("{at}slug"), Problem::SlugKey));
        }
        table.insert("slug".into(), Value::String(slug.clone()));
        let secret_key = take_secret_ref(&mut table, "secret_key", &at, &mut errors);
        let hs_secret = match table.get_mut("jwt") {
            Some(Value::Table(jwt)) => {
                take_secret_ref(jwt, "hs_secret", &format!("{at}jwt."), &mut errors)
            }
            _ => None,
        };
        let mut spec: AppSpec = match Value::Table(table).try_into() {
            Ok(s) => s,
            Err(e) => {
                errors.push(field_error(
                    format!("apps.{slug}"),
                    Problem::Settings(without_strings(e.to_string().trim_end())),
                ));
                continue;
            }
        };
        match secret_key.map(|r| r.resolve(base_dir, env)).transpose() {
            Ok(s) => spec.secret_key = s,
            Err(e) => errors.push(e),
        }
        match hs_secret.map(|r| r.resolve(base_dir, env)).transpose() {
            Ok(Some(s)) => {
                if let Some(jwt) = spec.jwt.as_mut() {
                    jwt.hs_secret = Some(s);
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        specs.push(spec);
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(FileErrors(errors))
    }
}

/// The environment variable an exported file suggests for a secret: `PHOTOS_APP_SECRET_KEY`.
pub fn env_name(slug: &str, field: &str) -> String {
    format!(
        "{}_{}",
        slug.to_uppercase().replace('-', "_"),
        field.to_uppercase()
    )
}

/// Renders `specs` as an apps file. Secrets are left out; a comment under each app says how
/// to give one, and `apply` keeps the stored secrets meanwhile.
///
/// Each app is rendered in parts (its settings, then `jwt`, then `template`), each part a
/// TOML document of one table whose first line is that table's header, so the comments go
/// right under a header and never into a value (a multi-line string can hold any line).
pub fn render(specs: &[AppSpec]) -> anyhow::Result<String> {
    let mut out = String::from(
        "# stsgate apps, as `stsgate export` wrote them. Apply with: stsgate apply -f FILE\n\
         # Secrets are never exported: each app keeps its stored SecretKey (and HS secret)\n\
         # unless the file names a new one with secret_key_env / secret_key_file\n\
         # (hs_secret_env / hs_secret_file under [apps.<slug>.jwt]).\n",
    );
    for spec in specs {
        let Value::Table(mut table) = Value::try_from(spec)? else {
            anyhow::bail!("app {} does not serialize as a table", spec.slug);
        };
        table.remove("slug");
        let jwt = table.remove("jwt");
        let template = table.remove("template");
        out.push('\n');
        let hint = format!(
            "# secret_key_env = \"{}\"  # to set a new SecretKey; left out, the stored one is kept\n",
            env_name(&spec.slug, "secret_key")
        );
        render_table(&mut out, &spec.slug, None, Value::Table(table), Some(&hint))?;
        if let Some(jwt) = jwt {
            let hint = spec.jwt.as_ref().is_some_and(|j| j.uses_hs()).then(|| {
                format!(
                    "# hs_secret_env = \"{}\"  # to set a new HS secret; left out, the stored one is kept\n",
                    env_name(&spec.slug, "jwt_hs_secret")
                )
            });
            render_table(&mut out, &spec.slug, Some("jwt"), jwt, hint.as_deref())?;
        }
        if let Some(template) = template {
            render_table(&mut out, &spec.slug, Some("template"), template, None)?;
        }
    }
    Ok(out)
}

/// Appends `[apps.<slug>]` (or `[apps.<slug>.<sub>]`) holding `value`, with `comment` right
/// under the header.
fn render_table(
    out: &mut String,
    slug: &str,
    sub: Option<&str>,
    value: Value,
    comment: Option<&str>,
) -> anyhow::Result<()> {
    let mut app = Table::new();
    let value = match sub {
        Some(sub) => {
            let mut t = Table::new();
            t.insert(sub.to_owned(), value);
            Value::Table(t)
        }
        None => value,
    };
    app.insert(slug.to_owned(), value);
    let mut doc = Table::new();
    doc.insert("apps".into(), Value::Table(app));
    let text = toml::to_string(&doc)?;
    let Some(comment) = comment else {
        out.push_str(&text);
        return Ok(());
    };
    let (header, rest) = text.split_once('\n').unwrap_or((&text, ""));
    anyhow::ensure!(
        header.starts_with("[apps.") && header.ends_with(']'),
        "app {slug}: the TOML of {} does not start with its header",
        sub.unwrap_or("the settings")
    );
    out.push_str(header);
    out.push('\n');
    out.push_str(comment);
    out.push_str(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    const FILE: &str = r#"
[apps.photos]
name = "Photos"
region = "ap-guangzhou"
bucket = "photos-1250000000"
secret_id = "AKIDEXAMPLEEXAMPLE"
secret_key_env = "PHOTOS_SECRET_KEY"

[apps.photos.jwt]
algorithms = ["HS256"]
hs_secret_file = "hs.txt"
"#;

    fn env(var: &str) -> Option<String> {
        (var == "PHOTOS_SECRET_KEY").then(|| "the-key".to_owned())
    }

    #[test]
    fn secrets_come_from_the_environment_or_a_file() {
        let dir = std::env::temp_dir().join(format!("stsgate-apps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hs.txt"), "hs-secret\n").unwrap();
        let specs = parse(FILE, &dir, &env).unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].slug, "photos");
        assert_eq!(
            specs[0].duration_max, 7200,
            "defaults are the new-app form's"
        );
        assert_eq!(
            specs[0].secret_key.as_ref().unwrap().expose_secret(),
            "the-key"
        );
        let jwt = specs[0].jwt.as_ref().unwrap();
        assert_eq!(jwt.hs_secret.as_ref().unwrap().expose_secret(), "hs-secret");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn messages(e: FileErrors) -> Vec<String> {
        e.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn problems_name_the_app_and_field() {
        let none = |_: &str| None;
        let err = messages(parse(FILE, Path::new("/nonexistent"), &none).unwrap_err());
        assert!(
            err.contains(&"apps.photos.secret_key_env: the environment variable PHOTOS_SECRET_KEY is not set".to_owned()),
            "{err:?}"
        );
        assert!(
            err.contains(&"apps.photos.jwt.hs_secret_file: the file it names does not exist (a relative path is read from the apps file's directory)".to_owned()),
            "{err:?}"
        );

        let clear = FILE.replace(
            "secret_key_env = \"PHOTOS_SECRET_KEY\"",
            "secret_key = \"x\"",
        );
        let err = messages(parse(&clear, Path::new("."), &env).unwrap_err());
        assert!(
            err[0].starts_with("apps.photos.secret_key: secrets are never written in the file"),
            "{err:?}"
        );

        let typo = FILE.replace("bucket =", "buckett =");
        let err = messages(parse(&typo, Path::new("."), &env).unwrap_err());
        assert!(
            err.iter()
                .any(|e| e.starts_with("apps.photos:") && e.contains("buckett")),
            "{err:?}"
        );
    }

    /// A secret pasted where its reference goes, or breaking the TOML, is never echoed.
    #[test]
    fn a_pasted_secret_is_never_echoed() {
        let secret = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
        let none = |_: &str| None;
        let echoed = |file: String| {
            let err = parse(&file, Path::new("/nonexistent"), &none)
                .unwrap_err()
                .to_string();
            assert!(!err.contains(secret), "{err}");
            assert!(!err.contains("Gu5t9x"), "{err}");
            err
        };
        // A valid-looking name (a SecretKey is alphanumeric), and not.
        let err = echoed(FILE.replace("PHOTOS_SECRET_KEY", secret));
        assert!(
            err.contains(
                "apps.photos.secret_key_env: the environment variable it names is not set"
            ),
            "{err}"
        );
        let err = echoed(FILE.replace("PHOTOS_SECRET_KEY", &format!("{secret}+/=")));
        assert!(
            err.contains("apps.photos.secret_key_env: is not a valid environment variable name"),
            "{err}"
        );
        // A string where another type goes: serde would quote it.
        let err = echoed(FILE.replace(
            "bucket = \"photos-1250000000\"",
            &format!("duration_max = \"{secret}\"\nbucket = \"b-1\""),
        ));
        assert!(
            err.contains("invalid type: a string, expected i32"),
            "{err}"
        );
        let err = echoed(FILE.replace("hs.txt", &format!("{secret}+/=")));
        assert!(
            err.contains("apps.photos.jwt.hs_secret_file: the file it names does not exist"),
            "{err}"
        );
        // A quote in the secret breaks the TOML: the position and the key, not the line.
        let err = echoed(FILE.replace("\"PHOTOS_SECRET_KEY\"", &format!("\"{secret}\"x\"")));
        assert!(
            err.starts_with("not valid TOML at line 7, column ")
                && err.contains("(key secret_key_env)"),
            "{err}"
        );
        let err = echoed(FILE.replace("\"PHOTOS_SECRET_KEY\"", &format!("\"{secret}")));
        assert!(
            err.contains("line 7") && err.contains("(key secret_key_env)"),
            "{err}"
        );
    }

    #[test]
    fn an_exported_file_parses_back_to_the_same_specs() {
        let dir = std::env::temp_dir().join(format!("stsgate-apps-rt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hs.txt"), "hs-secret\n").unwrap();
        let mut specs = parse(FILE, &dir, &env).unwrap();
        // What TOML must carry faithfully: multi-line PEM keys, conditions, shared statements.
        specs[0].jwt.as_mut().unwrap().public_keys = vec![
            "kid: k1\n-----BEGIN PUBLIC KEY-----\nMFkw\"EwYH'\n-----END PUBLIC KEY-----\n".into(),
        ];
        specs[0].template = Some(
            serde_json::from_value(serde_json::json!({"prefix": "users/${sub}/", "statements": [
                {"effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/*"],
                 "conditions": {"ip_equal": {"qcs:ip": ["10.0.0.0/8"]}, "numeric_less_than_equal": {"cos:content-length": 1048576}}},
                {"effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["public/*"],
                 "shared": {"reason": "the catalogue every user reads"}}]}))
            .unwrap(),
        );
        // Multi-line strings holding the lines the comments go under: untouched.
        let tricky = "first line\nsecret_id = \"AKIDX\"\n[apps.photos.jwt]\n[apps.photos]\nlast";
        specs[0].blocked_subjects = vec![policy_store::BlockSpec {
            subject: "mallory".into(),
            reason: Some(tricky.into()),
        }];
        let mut doc = serde_json::to_value(specs[0].template.as_ref().unwrap()).unwrap();
        doc["statements"][1]["shared"]["reason"] = tricky.into();
        specs[0].template = Some(serde_json::from_value(doc).unwrap());
        let text = render(&specs).unwrap();
        assert!(
            text.contains("# secret_key_env = \"PHOTOS_SECRET_KEY\""),
            "{text}"
        );
        assert!(
            text.contains("# hs_secret_env = \"PHOTOS_JWT_HS_SECRET\""),
            "{text}"
        );
        assert!(
            text.contains("\nsecret_id = \"AKIDX\"\n[apps.photos.jwt]\n"),
            "the strings are multi-line in the file:\n{text}"
        );
        let back = parse(&text, &dir, &env).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&specs).unwrap()
        );
        assert!(back[0].secret_key.is_none(), "no secret in an export");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The README's excerpt of examples/apps.toml is the file's own text (e2e applies the file).
    #[test]
    fn the_readme_shows_the_example_file() {
        let root = env!("CARGO_MANIFEST_DIR");
        let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
        let example = std::fs::read_to_string(format!("{root}/examples/apps.toml")).unwrap();
        let section = &readme[readme.find("### Apps as code").unwrap()..];
        let block = section.split("```toml\n").nth(1).unwrap();
        let block = &block[..block.find("```").unwrap()];
        for line in block.lines().filter(|l| !l.starts_with('#')) {
            let line = line.split("  #").next().unwrap().trim_end();
            assert!(
                example.lines().any(|l| l == line),
                "README line {line:?} is not in examples/apps.toml"
            );
        }
        let env = |var: &str| Some(format!("{var}-value-that-is-long-enough-0123456789"));
        let specs = parse(&example, Path::new(root), &env).unwrap();
        assert_eq!(specs.len(), 2);
    }
}
