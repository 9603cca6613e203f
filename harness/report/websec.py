"""What a browser is told about the harness's pages: Host check and Content-Security-Policy.

`harness dashboard` listens on 127.0.0.1 only, but any web page the user opens can make
the browser talk to 127.0.0.1 under another name (DNS rebinding: `attacker.example`
resolving to 127.0.0.1). The browser then sends `Host: attacker.example:PORT`, so the
server answers only requests whose Host names the loopback address it serves (421
otherwise). The CSP keeps a page that renders result data (names and messages from a run
folder) from running any script but the harness's own or loading anything from elsewhere.
"""

from __future__ import annotations

import base64
import hashlib


def allowed_hosts(port: int) -> frozenset[str]:
    """The Host header values a loopback server on `port` answers (lower case)."""
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})


def host_ok(host: str | None, port: int) -> bool:
    """True when `host` (the request's Host header) names this loopback server. A
    missing Host is refused too: every browser sends one, so only a forged request lacks it."""
    if not host:
        return False
    return host.strip().lower() in allowed_hosts(port)


def script_hash(js: str) -> str:
    digest = hashlib.sha256(js.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def csp(script_hashes: tuple[str, ...] = (), forms: str = "'none'") -> str:
    """The policy: nothing from anywhere but inline styles, the listed inline scripts and
    fetches to the page's own origin (the live dashboard polls data.json). `forms`: where
    a form may submit (only the served index's run picker needs its own origin)."""
    scripts = " ".join(script_hashes) if script_hashes else "'none'"
    return ("default-src 'none'; "
            f"script-src {scripts}; "
            "style-src 'unsafe-inline'; img-src data:; connect-src 'self'; "
            f"base-uri 'none'; form-action {forms}")


def header_csp(script_js: tuple[str, ...] = ()) -> str:
    """Sent as a header on every server response (`frame-ancestors` works only there);
    `script_js`: the inline scripts the server's pages carry (the dashboard's)."""
    # the index's run picker submits to /compare on this server (Host-checked like the rest)
    return csp(tuple(script_hash(js) for js in script_js), forms="'self'") \
        + "; frame-ancestors 'none'"


def meta_csp(script_js: str | None = None) -> str:
    """A <meta> CSP for a self-contained page (report.html, comparison.html), which is also
    opened from disk where no header applies."""
    policy = csp((script_hash(script_js),) if script_js is not None else ())
    return f"<meta http-equiv=Content-Security-Policy content=\"{policy}\">"
