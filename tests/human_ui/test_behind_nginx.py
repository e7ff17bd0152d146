"""The team set-up of docs/exposing_the_labeling_app.md, run for real: Debian's nginx with TLS
(a certificate the test makes) in front of the app on 127.0.0.1, and Chromium labeling through
it. Tokens, the Secure session cookie, the origin check and the forwarded Host must all work."""

import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from embodied_pref.store import PreferenceDataset
from human_ui.config import UIConfig
from human_ui.connections import ConnectionLimits
from human_ui.server import create_app

READY = "document.body.dataset.ready"
CONF = """
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    limit_conn_zone $binary_remote_addr zone=labels_per_ip:10m;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate     {prefix}/cert.pem;
        ssl_certificate_key {prefix}/key.pem;
        client_header_timeout 10s;
        client_body_timeout   10s;
        send_timeout          30s;
        client_max_body_size  16k;
        limit_conn labels_per_ip 64;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_set_header Host              $host;
            proxy_set_header X-Forwarded-For   $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host  $host;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def proxy_prefix(tmp_path):
    """A prefix directory for nginx with a self-signed certificate for 127.0.0.1."""
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(prefix / "key.pem"), "-out", str(prefix / "cert.pem")],
                   check=True, capture_output=True)
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / name).mkdir(mode=0o777)
    return prefix


def start_nginx(nginx: str, prefix: Path, port: int, upstream: int) -> subprocess.Popen:
    user = "user root;" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(CONF.format(prefix=prefix, port=port, upstream=upstream, user=user))
    process = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                "-g", "daemon off;"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"nginx did not start: {process.stderr.read()}")
            time.sleep(0.05)


def test_labeling_through_nginx_with_tls(browser, nginx, dataset_dir, proxy_prefix, serve):
    with PreferenceDataset.open(dataset_dir) as ds:
        token = ds.add_annotator("ann")
    port = free_port()
    public = f"https://127.0.0.1:{port}"
    config = UIConfig(overlap=0.0, public_url=public, limits=ConnectionLimits(max_per_client=1024))
    with serve(create_app(dataset_dir, config)) as server:
        proxy = start_nginx(nginx, proxy_prefix, port, int(server.url.rsplit(":", 1)[1]))
        try:
            context = browser.new_context(ignore_https_errors=True)
            page = context.new_page()
            page.goto(f"{public}/?token={token}")
            page.wait_for_selector("body[data-ready]", timeout=15_000)
            for key in ("ArrowLeft", "ArrowRight", "ArrowDown"):
                before = page.evaluate(READY)
                page.keyboard.press(key)
                page.wait_for_function(f"prev => {READY} && {READY} !== prev", arg=before, timeout=15_000)
            cookies = context.cookies()
            assert [(c["secure"], c["sameSite"], c["httpOnly"]) for c in cookies] == [(True, "Strict", True)]
            context.close()
            verify = ssl.create_default_context(cafile=proxy_prefix / "cert.pem")
            assert httpx.get(f"{public}/api/next", verify=verify).status_code == 401  # tokens demanded
            with httpx.Client(base_url=public, verify=verify, headers={"X-Annotator-Token": token}) as http:
                csrf = http.get("/api/session").json()["csrf_token"]
                query = http.get("/api/next", headers={"X-CSRF-Token": csrf}).json()["query"]
                response = http.post("/api/label", json={"query_id": query["id"], "outcome": "left"},
                                     headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example.org"})
                assert response.status_code == 403 and "header 'Origin'" in response.json()["detail"]
        finally:
            proxy.terminate()
            proxy.wait(timeout=10)
    with PreferenceDataset.open(dataset_dir) as ds:
        assert [(x.annotator, x.outcome.value) for x in ds.labels()] == [
            ("ann", "left"), ("ann", "right"), ("ann", "equal")]
