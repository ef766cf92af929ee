"""The URLs the front hands out: IRIs from the config go out as URIs; links name the address the client reached."""

from __future__ import annotations

import json
import socket

import pytest

from harness import wait_until

from http_front import iri, m3u, public_urls
from retrovue_air import config

# Characters RFC 3986 lets a URI hold as they are; nothing else may reach a header or a playlist.
URI_CHARACTERS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%")


@pytest.mark.parametrize("given, uri", [
    ("https://例え.テスト/ロゴ.png", "https://xn--r8jz45g.xn--zckzah/%E3%83%AD%E3%82%B4.png"),
    ("https://bücher.de:8443/a?q=ü#ä", "https://xn--bcher-kva.de:8443/a?q=%C3%BC#%C3%A4"),
    ("https://img.example/a%20b%2Fc.png", "https://img.example/a%20b%2Fc.png"),  # escapes kept as made
    ("https://img.example/100%.png?p=%zz", "https://img.example/100%25.png?p=%25zz"),  # a bare % is one
    ("https://img.example/a b\"<>\\^`{|}.png", "https://img.example/a%20b%22%3C%3E%5C%5E%60%7B%7C%7D.png"),
    ("https://img.example/\x07\x7f\x85\u2028", "https://img.example/%07%7F%C2%85%E2%80%A8"),
    ("http://usér:pw@[2001:db8::1]:8080/x", "http://us%C3%A9r:pw@[2001:db8::1]:8080/x"),
    ("https://" + "é" * 70 + ".example/", "https://" + "%C3%A9" * 70 + ".example/"),  # no A-label: encoded
    ("https://img.example/logo.png", "https://img.example/logo.png"),
])
def test_an_iri_becomes_a_uri_of_ascii_with_its_host_as_an_a_label(given, uri):
    assert iri.to_uri(given) == uri
    assert set(uri) <= URI_CHARACTERS
    assert iri.to_uri(uri) == uri, "encoding a URI again changes nothing"


def channel(logo: str | None) -> config.Channel:
    return config.Channel(id="c", name="C", source=config.TestPattern(440), number="1", logo=logo)


def test_a_remote_logo_is_one_uri_in_the_redirect_the_playlist_and_the_guide():
    logo = channel("https://例え.テスト/ロゴ.png")
    uri = "https://xn--r8jz45g.xn--zckzah/%E3%83%AD%E3%82%B4.png"
    assert public_urls.remote_logo(logo) == public_urls.logo_url("http://h:1", logo) == uri
    assert f'tvg-logo="{uri}"' in m3u.render([logo], "http://h:1").decode()
    assert public_urls.remote_logo(channel("/srv/logo.png")) is None
    assert public_urls.logo_url("http://h:1", channel("/srv/logo.png")) == "http://h:1/logos/c.png"
    assert public_urls.logo_url("http://h:1", channel(None)) is None


def test_a_public_url_given_as_an_iri_is_handed_out_as_a_uri():
    assert public_urls.base_url("https://télé.example/air", "ignored:1") == "https://xn--tl-bjab.example/air"
    assert public_urls.base_url(None, "tv.example:8000") == "http://tv.example:8000"


# Links for a client that sent no Host (HTTP/1.0) name the address and port it connected to

def http10_get(service, target: str, host: bytes | None = None) -> str:
    with socket.create_connection(("127.0.0.1", service.port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.0\r\n".encode() + (b"Host: " + host + b"\r\n" if host else b"") + b"\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


def test_without_a_host_header_links_name_the_address_and_port_the_client_reached(service):
    front, fds = service.front.pid, service.fd_counts()
    base = f"http://127.0.0.1:{service.port}"
    playlist = http10_get(service, "/channels.m3u").splitlines()
    assert playlist[0] == f'#EXTM3U url-tvg="{base}/xmltv.xml" x-tvg-url="{base}/xmltv.xml"'
    assert playlist[2] == f"{base}/channels/1.ts"
    assert json.loads(http10_get(service, "/discover.json"))["BaseURL"] == base
    # A Host that cannot be echoed safely is treated as none.
    assert http10_get(service, "/channels/1.m3u", b"a\"b").splitlines()[2] == f"{base}/channels/1.ts"
    assert http10_get(service, "/channels/1.m3u", b"tv.example:81").splitlines()[2] == "http://tv.example:81/channels/1.ts"
    assert service.front.pid == front
    wait_until(lambda: service.fd_counts() == fds, 5, f"descriptors back at {fds}")


@pytest.mark.parametrize("address, authority", [(("127.0.0.1", 8000), "127.0.0.1:8000"),
                                                (("::1", 8000, 0, 0), "[::1]:8000"),
                                                (("fe80::1%eth0", 80, 0, 2), "[fe80::1%25eth0]:80"),
                                                (("::ffff:192.168.1.5", 8000, 0, 0), "192.168.1.5:8000")])
def test_the_authority_of_a_local_address(address, authority):
    assert public_urls.authority(address) == authority
