//! `orderflow token`: mint a token as an identity provider would, for development and
//! tests; and the secret `orderflow dev` keeps per data directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use orderflow_store::auth::{self, Role};
use orderflow_store::config::parse_duration;

/// orderflow verifies tokens and never issues them in production: this is the stand-in
/// for an identity provider, signing HS256 with the same secret the services verify with.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The subject: a user id for customers, any name for admins.
    #[arg(long)]
    sub: String,
    /// A role the token grants (repeat for both).
    #[arg(long = "role", value_enum, required = true)]
    roles: Vec<Role>,
    /// How long the token holds.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// The HS256 secret the services verify with.
    #[arg(
        long = "auth-secret",
        env = "ORDERFLOW_AUTH_SECRET",
        hide_env_values = true
    )]
    secret: Option<String>,
    /// File holding the secret (what `orderflow dev` prints).
    #[arg(long = "auth-secret-file", env = "ORDERFLOW_AUTH_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// The token's `iss`.
    #[arg(long = "auth-issuer", env = "ORDERFLOW_AUTH_ISSUER", default_value = auth::DEFAULT_ISSUER)]
    issuer: String,
    /// The token's `aud`.
    #[arg(long = "auth-audience", env = "ORDERFLOW_AUTH_AUDIENCE", default_value = auth::DEFAULT_AUDIENCE)]
    audience: String,
}

/// Durations up to a year (`30m`, `12h`, `7d`, or what every other duration flag takes).
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = match text.strip_suffix('d').or_else(|| text.strip_suffix('h')) {
        Some(number) => {
            let unit = if text.ends_with('d') { 86_400 } else { 3_600 };
            let n: u64 = number
                .parse()
                .map_err(|_| format!("{text:?} is not a duration"))?;
            Duration::from_secs(n.saturating_mul(unit))
        }
        None => parse_duration(text)?,
    };
    match ttl.is_zero() || ttl > Duration::from_secs(366 * 86_400) {
        true => Err("--ttl must be longer than zero and at most a year".into()),
        false => Ok(ttl),
    }
}

pub(crate) fn run(args: TokenArgs) -> anyhow::Result<()> {
    let verifier = auth::AuthArgs {
        secret: args.secret.clone(),
        secret_file: args.secret_file.clone(),
        ..auth::AuthArgs::with_secret("")
    };
    let secret = verifier.secret().map_err(anyhow::Error::msg)?;
    let user = uuid::Uuid::parse_str(&args.sub)
        .ok()
        .filter(|id| !id.is_nil() && !id.is_max());
    if args.roles.contains(&Role::Customer) && user.is_none() {
        anyhow::bail!("a customer's --sub is their user id (a UUID, not nil or max), as the command API answered when they registered");
    }
    let token = auth::mint(
        &secret,
        &args.issuer,
        &args.audience,
        &args.sub,
        &args.roles,
        args.ttl,
    )
    .map_err(anyhow::Error::msg)?;
    println!("{token}");
    Ok(())
}

/// The HS256 secret of the `orderflow dev` whose data lives under `home`: made on first use
/// (two random UUIDs, 244 random bits, readable by the owner only) and kept, so tokens
/// outlive restarts.
pub(crate) fn dev_secret(home: &Path) -> anyhow::Result<(PathBuf, String)> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = home.join("auth-secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        if secret.trim().len() >= auth::MIN_SECRET_LEN {
            // Whoever could read it could mint an admin's token.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} private", path.display()))?;
            return Ok((path, secret.trim().to_owned()));
        }
    }
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok((path, secret))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` only applies to a file it creates: an existing one is made private here.
    use std::os::unix::fs::PermissionsExt as _;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_days_hours_and_the_usual_units() {
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_ttl("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1_800)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("400d").is_err());
    }

    #[test]
    fn the_dev_secret_is_made_once_and_kept_private() {
        let home = std::env::temp_dir().join(format!("orderflow-token-{}", uuid::Uuid::now_v7()));
        let (path, first) = dev_secret(&home).unwrap();
        let (_, again) = dev_secret(&home).unwrap();
        assert_eq!(first, again);
        assert!(first.len() >= auth::MIN_SECRET_LEN);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the secret is readable by others");
        std::fs::remove_dir_all(home).unwrap();
    }
}
