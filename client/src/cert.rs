//! `flint cert`: certificates for a test cluster's TLS (`security.ssl.*`).
//!
//! ```text
//! flint cert --out DIR [--host NAME]... [--name NAME] [--days N] [--ca-days N]
//!            [--password PW] [--force]
//! ```
//!
//! Writes into `DIR`: a CA (`ca.pem`, `ca-key.pem`, and `truststore.p12` holding the CA
//! certificate) unless `DIR` already has one, which then signs; and a certificate for the
//! hosts (default `localhost`, `127.0.0.1` and this machine's host name) as `<name>.pem`
//! (certificate and CA chain), `<name>-key.pem` (unencrypted PKCS#8 key) and `<name>.p12`
//! (PKCS#12 keystore). It prints the `config.yaml` lines for both Flink's keystore keys and
//! Flint's PEM keys. Existing certificate files are kept unless `--force` is given; an
//! existing CA is never replaced.
//!
//! Keystores and the truststore are protected with `--password` (or `FLINT_CERT_PASSWORD`);
//! without one a random password is generated and printed. Private keys are written
//! readable by their owner only.

use std::io::Read as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use flint_common::tls::certgen::{pkcs12_truststore, write_ca, write_file, write_host, Ca, Validity};
use flint_common::tls::material::{self, MaterialError};
use flint_common::tls::options::TrustSource;

use crate::jobs::Io;

#[derive(Debug, Args)]
pub struct CertArgs {
    /// Directory to write to (created if missing); a CA already in it (ca.pem and
    /// ca-key.pem) signs the new certificate.
    #[arg(long = "out", value_name = "DIR")]
    out: PathBuf,

    /// A host name or IP address the certificate is for (repeatable; the first is its
    /// common name). Default: localhost, 127.0.0.1 and this machine's host name.
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,

    /// File name of the certificate: <name>.pem, <name>-key.pem, <name>.p12.
    #[arg(long = "name", value_name = "NAME", default_value = "cluster")]
    name: String,

    /// Days the certificate is valid.
    #[arg(long = "days", value_name = "N", default_value_t = 365,
          value_parser = clap::value_parser!(u32).range(1..=36500))]
    days: u32,

    /// Days a new CA is valid.
    #[arg(long = "ca-days", value_name = "N", default_value_t = 3650,
          value_parser = clap::value_parser!(u32).range(1..=36500))]
    ca_days: u32,

    /// Password of the keystore and the truststore (default: a random one, printed).
    #[arg(long = "password", value_name = "PW", env = "FLINT_CERT_PASSWORD", hide_env_values = true)]
    password: Option<String>,

    /// Replace existing <name>.pem, <name>-key.pem and <name>.p12 (and a truststore.p12
    /// without its CA).
    #[arg(long = "force")]
    force: bool,
}

const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const TRUSTSTORE_FILE: &str = "truststore.p12";

/// This machine's host name, if it can be read.
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

fn default_hosts() -> Vec<String> {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    hosts.extend(hostname());
    hosts
}

/// 128 random bits as hex, from the kernel.
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("Could not read /dev/urandom for a password; pass --password")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A YAML double-quoted scalar.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Whether `password` opens the truststore at `path`.
fn opens(path: &Path, password: &str) -> Result<bool> {
    let source = TrustSource::Pkcs12 {
        path: path.to_path_buf(),
        path_key: "truststore.p12",
        password: password.to_string(),
        password_key: "--password",
    };
    match material::load_trust(&source) {
        Ok(_) => Ok(true),
        Err(MaterialError::WrongPassword { .. }) => Ok(false),
        Err(e) => bail!("{e}"),
    }
}

pub fn run(args: &CertArgs, io: &mut Io<'_>) -> Result<u8> {
    let name = args.name.trim();
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') || ["ca", "truststore"].contains(&name) {
        bail!("Invalid --name '{}': a plain file name other than 'ca' and 'truststore' is expected", args.name);
    }
    let mut hosts: Vec<String> = Vec::new();
    for host in if args.hosts.is_empty() { default_hosts() } else { args.hosts.clone() } {
        let host = host.trim().to_string();
        if host.is_empty() {
            bail!("Invalid --host '': a host name or IP address is expected");
        }
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    let (password, generated) = match &args.password {
        Some(p) if p.is_empty() => bail!("The --password must not be empty"),
        Some(p) => (p.clone(), false),
        None => (random_password()?, true),
    };

    std::fs::create_dir_all(&args.out).with_context(|| format!("Could not create {}", args.out.display()))?;
    let dir = args.out.canonicalize().with_context(|| format!("Could not resolve {}", args.out.display()))?;
    let host_paths =
        [dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")), dir.join(format!("{name}.p12"))];
    let (ca_path, ca_key_path, truststore) = (dir.join(CA_FILE), dir.join(CA_KEY_FILE), dir.join(TRUSTSTORE_FILE));

    let ca = match (ca_path.exists(), ca_key_path.exists()) {
        (true, true) => {
            let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("Could not read {}", p.display()));
            let ca = Ca::load(&read(&ca_path)?, &read(&ca_key_path)?)
                .with_context(|| format!("Could not use the CA in {}", dir.display()))?;
            Some(ca)
        }
        (false, false) => None,
        (true, false) => bail!(
            "{} exists but {} does not, so the CA cannot sign: restore its key, or remove {} (and {}) to create a new CA",
            ca_path.display(),
            ca_key_path.display(),
            ca_path.display(),
            truststore.display()
        ),
        (false, true) => bail!(
            "{} exists but {} does not: restore the CA certificate, or remove {} to create a new CA",
            ca_key_path.display(),
            ca_path.display(),
            ca_key_path.display()
        ),
    };
    let mut existing: Vec<&PathBuf> = host_paths.iter().filter(|p| p.exists()).collect();
    if ca.is_none() && truststore.exists() {
        existing.push(&truststore);
    }
    if !existing.is_empty() && !args.force {
        let list: Vec<String> = existing.iter().map(|p| p.display().to_string()).collect();
        bail!("Refusing to overwrite {}: pass --force to replace them", list.join(", "));
    }

    let out = &mut io.out;
    let ca_created = ca.is_none();
    let ca = match ca {
        Some(ca) => ca,
        None => {
            let ca = Ca::generate("Flint CA", Validity::days(i64::from(args.ca_days)))?;
            write_ca(&dir, &ca, &password)?;
            ca
        }
    };
    // A reused CA's truststore keeps its password (processes may be reading it); one that
    // is missing is written again.
    let truststore_password = if ca_created || !truststore.exists() {
        if !ca_created {
            write_file(&truststore, &pkcs12_truststore(&ca.cert_der, "flint-ca", &password)?, false)?;
        }
        Some(password.clone())
    } else if opens(&truststore, &password)? {
        Some(password.clone())
    } else {
        None
    };
    let issued = ca.issue(&hosts, Validity::days(i64::from(args.days)))?;
    let files = write_host(&dir, name, &issued, &password)?;

    if ca_created {
        writeln!(
            out,
            "Created a CA: {} (its key {} signs further certificates: keep it private)",
            ca_path.display(),
            ca_key_path.display()
        )?;
    } else {
        writeln!(out, "Signed with the CA in {}", ca_path.display())?;
    }
    writeln!(out, "Truststore (the CA certificate): {}", truststore.display())?;
    writeln!(
        out,
        "Certificate for {}, valid for {} days: {} (with the CA), {} (private key), {} (keystore)",
        hosts.join(", "),
        args.days,
        files.certificate.display(),
        files.private_key.display(),
        files.keystore.display()
    )?;
    if generated {
        writeln!(out, "Generated keystore password: {password}")?;
    }
    let truststore_password = match truststore_password {
        Some(p) => quoted(&p),
        None => {
            writeln!(
                out,
                "Note: {} was written earlier with another password; it is unchanged.",
                truststore.display()
            )?;
            "<the password truststore.p12 was written with>".to_string()
        }
    };
    let path = |p: &Path| quoted(&p.display().to_string());
    let pw = quoted(&password);
    writeln!(out)?;
    writeln!(out, "# config.yaml with Flink's keys (PKCS#12 keystores):")?;
    for scope in ["internal", "rest"] {
        writeln!(out, "security.ssl.{scope}.enabled: true")?;
        writeln!(out, "security.ssl.{scope}.keystore: {}", path(&files.keystore))?;
        writeln!(out, "security.ssl.{scope}.keystore-password: {pw}")?;
        writeln!(out, "security.ssl.{scope}.key-password: {pw}")?;
        writeln!(out, "security.ssl.{scope}.truststore: {}", path(&truststore))?;
        writeln!(out, "security.ssl.{scope}.truststore-password: {truststore_password}")?;
    }
    writeln!(out, "# REST clients (the flint CLI too) must present a certificate of this CA; browsers have none:")?;
    writeln!(out, "security.ssl.rest.authentication-enabled: true")?;
    writeln!(out)?;
    writeln!(out, "# or with Flint's keys (PEM files):")?;
    for scope in ["internal", "rest"] {
        writeln!(out, "security.ssl.{scope}.enabled: true")?;
        writeln!(out, "flint.ssl.{scope}.certificate: {}", path(&files.certificate))?;
        writeln!(out, "flint.ssl.{scope}.private-key: {}", path(&files.private_key))?;
        writeln!(out, "flint.ssl.{scope}.ca-certificates: {}", path(&ca_path))?;
    }
    writeln!(out, "security.ssl.rest.authentication-enabled: true")?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_quoting() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn default_hosts_start_with_the_loopback_names() {
        assert_eq!(&default_hosts()[..2], ["localhost", "127.0.0.1"]);
        assert_eq!(random_password().unwrap().len(), 32);
    }
}
