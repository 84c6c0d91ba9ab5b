"""Authentication abuse against `[auth.jwt]` as examples/standalone/fanwire.toml describes it.

"Missing, invalid, wrongly signed, wrong-algorithm or expired tokens are closed
with 4403; a live token's `exp` closes the connection at that moment." With
`issuer` and `audience` set, a token must carry both, matching (issue 10 item 5).
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from websockets.exceptions import ConnectionClosed

from harness import TICK, Client, Server, b64url, jwt, within

SECRET = b"adversarial-secret-0123456789abcdef"
ISSUER = "https://issuer.adversarial.test"
AUDIENCE = "fanwire-adversarial"
HS256 = {
    "auth.jwt": {
        "algorithm": "HS256",
        "secret": SECRET.decode(),
        "issuer": ISSUER,
        "audience": AUDIENCE,
    }
}


@pytest.fixture(scope="module")
def hs_server(start_server: Callable[..., Server]) -> Server:
    """A server whose connections need an HS256 token from the suite's issuer."""
    return start_server(extra=HS256, init_payload={"token": good_token()})


def claims(**overrides: object) -> dict[str, object]:
    """Valid claims for an hour, with `overrides` (None removes a claim)."""
    now = int(time.time())
    base: dict[str, object] = {
        "sub": "user-1",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 3600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def good_token(**overrides: object) -> str:
    """A correctly signed HS256 token."""
    return jwt(claims(**overrides), SECRET)


async def connects(server: Server, payload: object = None, headers: dict[str, str] | None = None) -> None:
    """The token is accepted: ack, and an event published afterwards arrives."""
    client = await Client.open(server, headers=headers)
    await client.init(payload)
    await client.subscribe("a", TICK, {"s": "auth"})
    await client.ping_pong()
    await server.publish({"topic": "ticks:auth", "data": {"n": 1}})
    assert (await client.next_data("a"))["tick"]["n"] == 1
    await client.close()


async def refused(server: Server, payload: object = None, headers: dict[str, str] | None = None) -> None:
    """The connection is closed with 4403 and never acknowledged."""
    client = await Client.open(server, headers=headers)
    message: dict[str, object] = {"type": "connection_init"}
    if payload is not None:
        message["payload"] = payload
    await client.send(message)
    await client.subscribe("a", TICK, {"s": "auth"})
    closed = await client.closed("the 4403 close")
    assert closed.code == 4403, closed
    assert not [f for f in closed.frames if f.get("type") == "connection_ack"], closed.frames


async def test_valid_token_connects(hs_server: Server) -> None:
    await connects(hs_server, {"token": good_token()})


async def test_valid_token_in_upgrade_header_connects(hs_server: Server) -> None:
    await connects(hs_server, headers={"Authorization": f"Bearer {good_token()}"})


async def test_audience_list_containing_ours_connects(hs_server: Server) -> None:
    await connects(hs_server, {"token": good_token(aud=["other", AUDIENCE])})


async def test_fractional_exp_in_the_future_connects(hs_server: Server) -> None:
    """RFC 7519 NumericDate may be fractional."""
    await connects(hs_server, {"token": good_token(exp=time.time() + 3600.25)})


@pytest.mark.parametrize(
    "payload",
    [None, {}, {"token": ""}, {"token": None}, {"token": 5}, {"token": {}}, {"token": ["x"]}, {"tok": good_token()}],
    ids=["no-payload", "empty", "empty-string", "null", "number", "object", "list", "wrong-field"],
)
async def test_missing_token_is_refused(hs_server: Server, payload: object) -> None:
    await refused(hs_server, payload)


def unsigned(header: dict[str, object], body: dict[str, object], signature: str = "") -> str:
    return b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(body).encode()) + "." + signature


@pytest.mark.parametrize(
    "token",
    [
        unsigned({"alg": "none", "typ": "JWT"}, claims()),
        unsigned({"alg": "None", "typ": "JWT"}, claims()),
        unsigned({"alg": "NONE"}, claims()),
        unsigned({"typ": "JWT"}, claims()),
        unsigned({"alg": "none"}, claims(), good_token().split(".")[2]),
        jwt(claims(), b"another-secret-of-the-same-length!!"),
        jwt(claims(), SECRET, alg="HS512"),
        jwt(claims(), SECRET, alg="HS384"),
        jwt(claims(), SECRET, header={"alg": "RS256", "typ": "JWT"}),
        jwt(claims(), SECRET, header={"alg": "ES256", "typ": "JWT"}),
        jwt(claims(), b""),
        # A valid token with its payload swapped for another user's: the signature no longer fits.
        good_token().split(".")[0] + "." + b64url(json.dumps(claims(sub="admin")).encode()) + "." + good_token().split(".")[2],
    ],
    ids=["none", "None", "NONE", "no-alg", "none-with-sig", "other-key", "HS512", "HS384", "RS256-header", "ES256-header", "empty-key", "swapped-payload"],
)
async def test_unsigned_or_wrongly_signed_token_is_refused(hs_server: Server, token: str) -> None:
    await refused(hs_server, {"token": token})


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": int(time.time()) - 60},
        {"exp": 1.5},
        {"exp": -1},
        {"exp": 0},
        {"exp": -(2**63)},
        {"exp": "9999999999"},
        {"exp": True},
        {"exp": None},
        {"exp": [9999999999]},
        {"nbf": int(time.time()) + 3600},
        {"nbf": 2**63},
        {"nbf": 1e300},
        {"iss": "https://evil.test"},
        {"iss": ISSUER + "/"},
        {"iss": ISSUER.upper()},
        {"aud": "someone-else"},
        {"aud": ["someone-else"]},
        {"aud": []},
        {"iss": None},
        {"aud": None},
        {"iss": 5},
        {"aud": 5},
        {"iss": {"x": ISSUER}},
        {"aud": {"x": AUDIENCE}},
        {"iss": [ISSUER]},
    ],
    ids=[
        "expired",
        "exp-fraction-of-1970",
        "exp-negative",
        "exp-zero",
        "exp-min-i64",
        "exp-string",
        "exp-bool",
        "exp-missing",
        "exp-list",
        "not-yet-valid",
        "nbf-2^63",
        "nbf-1e300",
        "wrong-issuer",
        "issuer-trailing-slash",
        "issuer-case",
        "wrong-audience",
        "wrong-audience-list",
        "empty-audience-list",
        "missing-issuer",
        "missing-audience",
        "numeric-issuer",
        "numeric-audience",
        "object-issuer",
        "object-audience",
        "list-issuer",
    ],
)
async def test_invalid_claims_are_refused(hs_server: Server, overrides: dict[str, object]) -> None:
    await refused(hs_server, {"token": good_token(**overrides)})


@pytest.mark.parametrize(
    "exp",
    [2**63 - 1, 2**63, 2**64, 2**64 + 1, 1e300, 1.7976931348623157e308],
    ids=["i64-max", "2^63", "2^64", "2^64+1", "1e300", "f64-max"],
)
async def test_absurd_future_exp_neither_panics_nor_drops_the_connection(
    hs_server: Server, exp: float
) -> None:
    """Accepted (a date far in the future) or refused 4403; never a panicked task (1006)."""
    client = await Client.open(hs_server)
    await client.send({"type": "connection_init", "payload": {"token": good_token(exp=exp)}})
    try:
        msg = json.loads(await within(client.ws.recv(), "an answer to connection_init"))
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else 1006
        assert code == 4403, f"closed with {code}"
        return
    assert msg["type"] == "connection_ack", msg
    await client.subscribe("a", TICK, {"s": "absurd"})
    await client.ping_pong()
    await hs_server.publish({"topic": "ticks:absurd", "data": {"n": 1}})
    assert (await client.next_data("a"))["tick"]["n"] == 1
    await client.ping_pong()
    await client.close()


GARBAGE = [
    "a",
    "a.b",
    "a.b.c",
    "..",
    "....",
    "a.b.c.d.e",
    "\u0000",
    "ü.ü.ü",
    "A" * 12000,
    b64url(b"{") + "." + b64url(b"{") + "." + b64url(b"x"),
    b64url(b"[]") + "." + b64url(b"[]") + ".",
    b64url(b'{"alg":"HS256"}') + "." + b64url(b"null") + ".",
    b64url(b'{"alg":"HS256"}') + "." + b64url(b"not json") + ".",
    b64url(b'{"alg":"HS256"}') + "." + b64url(b"\xff\xfe") + ".",
    b64url(b'{"alg":"HS256"}') + "." + b64url(b"[" * 5000 + b"]" * 5000) + ".",
    good_token().replace(".", "..", 1),
    base64.b64encode(json.dumps(claims()).encode()).decode(),
]


@pytest.mark.parametrize("token", GARBAGE, ids=range(len(GARBAGE)))
async def test_garbage_token_is_refused(hs_server: Server, token: str) -> None:
    await refused(hs_server, {"token": token})


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer ", "Bearer garbage", f"Basic {good_token()}", "Bearer " + jwt(claims(), b"other-key")],
    ids=["bare", "empty", "garbage", "basic", "other-key"],
)
async def test_bad_upgrade_header_is_refused(hs_server: Server, authorization: str) -> None:
    await refused(hs_server, headers={"Authorization": authorization})


async def expires_while_connected(server: Server, exp: float) -> None:
    """Connects with a token valid until `exp`, receives an event, then keeps publishing
    (bounded) until the server closes: the close must be 4403."""
    client = await Client.open(server)
    await client.init({"token": good_token(exp=exp)})
    await client.subscribe("a", TICK, {"s": "expiry"})
    await client.ping_pong()
    await server.publish({"topic": "ticks:expiry", "data": {"n": 0}})
    assert (await client.next_data("a"))["tick"]["n"] == 0

    async def publish_until_closed() -> None:
        for n in range(1, 200):
            if client.ws.close_code is not None:
                return
            await server.publish({"topic": "ticks:expiry", "data": {"n": n}})
            await asyncio.sleep(0.1)  # paces the publisher; the wait below is on the close

    publisher = asyncio.create_task(publish_until_closed())
    closed = await client.closed("the 4403 close at the token's exp", seconds=30)
    publisher.cancel()
    assert closed.code == 4403, closed
    numbers = [f["payload"]["data"]["tick"]["n"] for f in closed.frames if f.get("type") == "next"]
    assert numbers == sorted(numbers), numbers


async def test_integer_exp_closes_the_connection_at_expiry(hs_server: Server) -> None:
    await expires_while_connected(hs_server, int(time.time()) + 3)


async def test_fractional_exp_closes_the_connection_at_expiry(hs_server: Server) -> None:
    """Issue 10 item 5: a fractional exp was read with as_u64 and never enforced."""
    await expires_while_connected(hs_server, int(time.time()) + 2.5)


# -- RS256: algorithm confusion ------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh RSA key pair (private, public PEM) made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("rsa")
    private, public = folder / "private.pem", folder / "public.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(private)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)],
        check=True,
        capture_output=True,
    )
    return private, public


def rs256(body: dict[str, object], private: Path) -> str:
    """An RS256 token signed with the openssl CLI."""
    signing_input = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "." + b64url(json.dumps(body).encode())
    signature = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(private)],
        input=signing_input.encode(),
        check=True,
        capture_output=True,
    ).stdout
    return signing_input + "." + b64url(signature)


@pytest.fixture(scope="module")
def rs_server(start_server: Callable[..., Server], rsa_keys: tuple[Path, Path]) -> Server:
    private, public = rsa_keys
    config = {
        "auth.jwt": {
            "algorithm": "RS256",
            "public_key_file": str(public),
            "issuer": ISSUER,
            "audience": AUDIENCE,
        }
    }
    return start_server(extra=config, init_payload={"token": rs256(claims(), private)})


async def test_rs256_valid_token_connects(rs_server: Server, rsa_keys: tuple[Path, Path]) -> None:
    await connects(rs_server, {"token": rs256(claims(), rsa_keys[0])})


async def test_hs256_token_signed_with_the_public_key_is_refused(
    rs_server: Server, rsa_keys: tuple[Path, Path]
) -> None:
    """The classic confusion: the verifier's public key used as an HMAC secret."""
    pem = rsa_keys[1].read_bytes()
    for key in (pem, pem.strip(), pem.replace(b"\n", b"")):
        await refused(rs_server, {"token": jwt(claims(), key)})


async def test_rs256_server_refuses_unsigned_and_hs256_tokens(rs_server: Server) -> None:
    await refused(rs_server, {"token": unsigned({"alg": "none"}, claims())})
    await refused(rs_server, {"token": good_token()})


async def test_rs256_token_from_another_key_is_refused(
    rs_server: Server, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(other)],
        check=True,
        capture_output=True,
    )
    await refused(rs_server, {"token": rs256(claims(), other)})


async def test_servers_settle(hs_server: Server, rs_server: Server) -> None:
    await hs_server.assert_settled()
    await rs_server.assert_settled()
