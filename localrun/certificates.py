r"""Self-signed TLS certificates and SuperNode authentication keys for a Flower 1.42 deployment.

Made with the `cryptography` package (a Flower dependency), so no `openssl` binary is needed:

    python -m localrun.certificates OUTDIR --host 10.0.0.5 --host superlink.example.org \
        --supernode sar-0 --supernode rgb-0

writes into OUTDIR:
    ``ca.crt`` / ``ca.key``         a self-signed certificate authority (keep ``ca.key`` offline);
    ``server.crt`` / ``server.key``  the SuperLink's certificate, signed by the CA, valid for
                                     127.0.0.1, ::1, localhost and every ``--host`` (IP or DNS);
    ``<name>``, ``<name>.pub``       one SuperNode key pair per ``--supernode`` (EC P-384 in
                                     OpenSSH format, the only format Flower 1.42 accepts).

How they are used (Flower 1.42; see docs/how-to/deployment.md):
    SuperLink   ``flower-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.crt
                --ssl-keyfile server.key --enable-supernode-auth ...`` (no ``--insecure``).
                The CA file is also what the SuperLink's own SuperExec uses to verify the
                server certificate, so the certificate must name the address in ``--host``.
    CLI         ``[superlink.NAME] address = "HOST:PORT"`` and
                ``root-certificates = "/abs/path/ca.crt"`` in ``$FLWR_HOME/config.toml``;
                then ``flwr supernode register sar-0.pub NAME`` registers (authorises) one
                SuperNode's public key. Only registered keys may connect; ``flwr supernode
                unregister NODE_ID NAME`` revokes one.
    SuperNode   ``flower-supernode --superlink HOST:PORT --root-certificates ca.crt
                --auth-supernode-private-key sar-0 ...`` (no ``--insecure``); the public
                key is derived from the private key.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class TLSFiles:
    """Paths of a CA certificate and of a server certificate and key signed by it."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    def superlink_args(self) -> list[str]:
        """The `flower-superlink` arguments that switch TLS on."""
        return ["--ssl-ca-certfile", str(self.ca_cert), "--ssl-certfile", str(self.server_cert),
                "--ssl-keyfile", str(self.server_key)]


@dataclass(frozen=True)
class NodeKeys:
    """A SuperNode's authentication key pair (OpenSSH format)."""

    private_key: Path
    public_key: Path


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600 if private else 0o644)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in dict.fromkeys(hosts):  # keep order, drop duplicates
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def make_ca(out_dir: str | Path, common_name: str = "fed-uml test CA", days: int = 30) -> tuple[Path, Path]:
    """A self-signed CA: (ca.crt, ca.key) in `out_dir`."""
    out = Path(out_dir)
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (_write(out / "ca.crt", cert.public_bytes(serialization.Encoding.PEM)),
            _write(out / "ca.key", _key_pem(key), private=True))


def make_server_cert(out_dir: str | Path, ca_cert: Path, ca_key: Path, hosts: Iterable[str] = DEFAULT_HOSTS,
                     days: int = 30, name: str = "server") -> tuple[Path, Path]:
    """A server certificate for `hosts` (IP addresses or DNS names) signed by the CA: (NAME.crt, NAME.key)."""
    out = Path(out_dir)
    hosts = list(hosts) or list(DEFAULT_HOSTS)
    ca = x509.load_pem_x509_certificate(Path(ca_cert).read_bytes())
    signer = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )
    return (_write(out / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM)),
            _write(out / f"{name}.key", _key_pem(key), private=True))


def make_tls(out_dir: str | Path, hosts: Iterable[str] = DEFAULT_HOSTS, days: int = 30) -> TLSFiles:
    """A CA and a server certificate for `hosts` in `out_dir`."""
    ca_cert, ca_key = make_ca(out_dir, days=days)
    cert, key = make_server_cert(out_dir, ca_cert, ca_key, hosts, days=days)
    return TLSFiles(ca_cert, ca_key, cert, key)


def make_node_keys(out_dir: str | Path, name: str) -> NodeKeys:
    """A SuperNode key pair: `name` (private, OpenSSH) and `name.pub` (`ecdsa-sha2-nistp384 ...`)."""
    out = Path(out_dir)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return NodeKeys(_write(out / name, private, private=True), _write(out / f"{name}.pub", public + b"\n"))


def main(argv: list[str] | None = None) -> None:
    """Write the certificates and keys from the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--host", action="append", default=[], help="an extra IP address or DNS name of the SuperLink")
    p.add_argument("--supernode", action="append", default=[], help="make a key pair with this name")
    p.add_argument("--days", type=int, default=365)
    args = p.parse_args(argv)
    tls = make_tls(args.out_dir, [*DEFAULT_HOSTS, *args.host], days=args.days)
    print(f"CA {tls.ca_cert}\nserver certificate {tls.server_cert} (key {tls.server_key})")
    for name in args.supernode:
        keys = make_node_keys(args.out_dir, name)
        print(f"SuperNode {name}: private key {keys.private_key}, public key {keys.public_key}")


if __name__ == "__main__":
    main()
