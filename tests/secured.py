"""Secured nats-servers for tests: TLS certificates, users, tokens, nkeys and operator-mode JWTs, all made here."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eventwire.server import EmbeddedServer

PASSWORD = "pw-Zq81xVbT3"
TOKEN = "tok-Hk52mPwL9"


def secured_server(tmp_path: Path, config: str, name: str = "secured") -> EmbeddedServer:
    """A server started with ``config`` (nats-server configuration text) on a free port."""
    path = tmp_path / f"{name}.conf"
    path.write_text(config)
    return EmbeddedServer(store_dir=tmp_path / f"{name}-js", extra_args=("-c", str(path))).start()


# -- TLS --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    hosts: tuple[str, ...] = (),
    client: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer is not None else (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if hosts:
        alternatives: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alternatives.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def make_certificates(folder: Path, prefix: str = "") -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _certificate(f"{prefix}eventwire test CA", ca_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    server_key, client_key = _key(), _key()
    server = _certificate("server", server_key, issuer, hosts=("127.0.0.1", "localhost"))
    client = _certificate("client", client_key, issuer, client=True)
    return Certificates(
        ca=_write_cert(ca, folder / f"{prefix}ca.pem"),
        server_cert=_write_cert(server, folder / f"{prefix}server.pem"),
        server_key=_write_key(server_key, folder / f"{prefix}server-key.pem"),
        client_cert=_write_cert(client, folder / f"{prefix}client.pem"),
        client_key=_write_key(client_key, folder / f"{prefix}client-key.pem"),
    )


def tls_block(certs: Certificates, *, verify: bool) -> str:
    return (
        "tls {\n"
        f'  cert_file: "{certs.server_cert}"\n  key_file: "{certs.server_key}"\n  ca_file: "{certs.ca}"\n'
        f"  verify: {'true' if verify else 'false'}\n  timeout: 2\n}}\n"
    )


# -- nkeys and JWTs ---------------------------------------------------------------------------------------


def new_keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), prefix)))


def seed_of(keypair: nkeys.KeyPair) -> str:
    return bytes(keypair.seed).decode()


def public_of(keypair: nkeys.KeyPair) -> str:
    return bytes(keypair.public_key).decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def encode_jwt(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    """A NATS JWT: ``ed25519-nkey`` signed by ``signer``, with a ``jti`` hashed from the claims."""
    claims = {"iat": int(time.time()), "iss": public_of(signer), **claims}
    digest = hashlib.sha512(json.dumps(claims, sort_keys=True).encode()).digest()[:32]
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = _b64(signer.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{signature}"


@dataclass(frozen=True)
class Operator:
    """An operator, an account with JetStream and one user, as server config and a creds file."""

    config: str
    creds: Path
    user_jwt: str
    user_seed: str
    account: nkeys.KeyPair


def creds_text(jwt: str, seed: str) -> str:
    return (
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


def user_jwt(account: nkeys.KeyPair, user: nkeys.KeyPair, *, expires: int | None = None) -> str:
    claims: dict[str, Any] = {
        "sub": public_of(user),
        "name": "tester",
        "nats": {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
    }
    if expires is not None:
        claims["exp"] = expires
    return encode_jwt(claims, account)


def make_operator(folder: Path, *, expires: int | None = None) -> Operator:
    folder.mkdir(parents=True, exist_ok=True)
    operator = new_keypair(nkeys.PREFIX_BYTE_OPERATOR)
    system = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    account = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    user = new_keypair(nkeys.PREFIX_BYTE_USER)
    operator_jwt = encode_jwt(
        {"sub": public_of(operator), "name": "O", "nats": {"type": "operator", "version": 2}}, operator
    )
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1}
    jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}

    def account_jwt(keypair: nkeys.KeyPair, name: str, limits: dict[str, Any]) -> str:
        return encode_jwt(
            {"sub": public_of(keypair), "name": name, "nats": {"type": "account", "version": 2, "limits": limits}},
            operator,
        )

    config = (
        f'operator: "{operator_jwt}"\nsystem_account: "{public_of(system)}"\nresolver: MEMORY\n'
        "resolver_preload: {\n"
        f'  {public_of(system)}: "{account_jwt(system, "SYS", unlimited)}"\n'
        f'  {public_of(account)}: "{account_jwt(account, "APP", {**unlimited, **jetstream})}"\n'
        "}\n"
    )
    jwt = user_jwt(account, user, expires=expires)
    creds = folder / "user.creds"
    creds.write_text(creds_text(jwt, seed_of(user)))
    return Operator(config, creds, jwt, seed_of(user), account)


# -- one server per credential kind ------------------------------------------------------------------------


class Secured:
    """The servers of this module, each with the credentials that open it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.certs = make_certificates(tmp / "tls")
        self.other_certs = make_certificates(tmp / "other-tls", "other-")
        self.nkey = new_keypair(nkeys.PREFIX_BYTE_USER)
        self.nkey_file = tmp / "user.nk"
        self.nkey_file.write_text(seed_of(self.nkey) + "\n")
        self.operator = make_operator(tmp / "operator")
        self.servers: dict[str, EmbeddedServer] = {}
        configs = {
            "tls": tls_block(self.certs, verify=False),
            "mtls": tls_block(self.certs, verify=True),
            "password": f'authorization {{ users = [ {{ user: alice, password: "{PASSWORD}" }} ] }}\n',
            "token": f'authorization {{ token: "{TOKEN}" }}\n',
            "nkey": f'authorization {{ users = [ {{ nkey: "{public_of(self.nkey)}" }} ] }}\n',
            "operator": self.operator.config,
        }
        for name, config in configs.items():
            self.servers[name] = secured_server(tmp, config, name)

    def url(self, name: str, scheme: str = "nats") -> str:
        return self.servers[name].url.replace("nats://", f"{scheme}://")

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
