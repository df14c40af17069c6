//! Throw-away certificates for TLS tests, made with the `openssl` CLI so
//! no key material is checked in.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::run_checked;

/// A throw-away PKI made with the `openssl` CLI: a CA, a server certificate
/// for `127.0.0.1`/`localhost`, and a client certificate.
#[derive(Debug, Clone)]
pub struct TestCerts {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestCerts {
    /// Generates the CA and both leaf certificates in `dir` (created).
    pub fn generate(dir: &Path) -> TestCerts {
        fs::create_dir_all(dir).expect("create tls dir");
        let p = |name: &str| dir.join(name);
        let openssl = || {
            let mut c = Command::new("openssl");
            c.current_dir(dir);
            c
        };
        // P-256 keys: fast to generate, PKCS#8 PEM, accepted by rustls.
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        run_checked(
            openssl()
                .args(["req", "-x509", "-nodes", "-days", "3650"])
                .args(ec)
                .args([
                    "-subj",
                    "/CN=anomalyd test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                ]),
        );
        let leaf = |name: &str, cn: &str, ext: &str| {
            fs::write(p(&format!("{name}.ext")), ext).expect("write ext file");
            run_checked(openssl().args(["req", "-nodes"]).args(ec).args([
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]));
            run_checked(openssl().args([
                "x509",
                "-req",
                "-days",
                "3650",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-CAserial",
                "ca.srl",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ]));
        };
        leaf(
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n",
        );
        leaf(
            "client",
            "anomalyd-test-client",
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=clientAuth\n",
        );
        TestCerts {
            ca_cert: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
        }
    }
}
