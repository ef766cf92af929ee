"""URLs as we show them: no password, no token; and the credentials as the origin gets them."""

from __future__ import annotations

import base64

import pytest

from retrovue_air.url_secrets import basic_auth, host_of, origin_of, redact_urls, redacted


@pytest.mark.parametrize("url, shown", [
    ("http://user:pa55w0rd@origin:8000/channels/1.ts?token=abc&x=1",
     "http://user:***@origin:8000/channels/1.ts?token=***&x=***"),
    ("https://t0ken@origin/1.ts", "https://***@origin/1.ts"),  # a user alone is often the token
    ("http://:pw@origin/", "http://***@origin/"),
    ("http://origin/1.ts?s3cr3t", "http://origin/1.ts?***"),  # a bare query item too
    ("http://origin/1.ts?a=&b=2#frag", "http://origin/1.ts?a=&b=***"),  # nothing to hide in a=; no fragment
    ("http://us%40er:p@ss@[::1]:8000?k=v", "http://us%40er:***@[::1]:8000?k=***"),  # the last @ ends userinfo
    ("http://origin:8000/channels/1.ts", "http://origin:8000/channels/1.ts"),  # nothing to hide
    ("http://origin/a@b/c", "http://origin/a@b/c"),  # an @ in the path is no userinfo
    ("not a url", "not a url"),
])
def test_a_url_is_shown_without_its_password_and_query_values(url, shown):
    assert redacted(url) == shown


def test_every_url_in_a_message_is_redacted_and_the_message_kept():
    text = ("the relay pull exited with status 1: http://u:pw@o:1/x.ts?token=t: Connection refused; "
            "ffmpeg said 'https://o/y.ts?k=v'. Also (http://o/z?a=b).")
    assert redact_urls(text) == ("the relay pull exited with status 1: http://u:***@o:1/x.ts?token=***: Connection "
                                 "refused; ffmpeg said 'https://o/y.ts?k=***'. Also (http://o/z?a=***).")
    assert redact_urls("no URL here: /srv/media/a.mkv") == "no URL here: /srv/media/a.mkv"


@pytest.mark.parametrize("url, host", [
    ("http://user:pw@origin.example:8000/1.ts?token=t", "origin.example:8000"),
    ("https://origin.example/1.ts", "origin.example"),
    ("http://[::1]:8000/1.ts", "[::1]:8000"),
    ("http://origin:port/1.ts", "?"),
])
def test_a_relay_is_named_by_its_host_alone(url, host):
    assert host_of(url) == host


def test_userinfo_becomes_basic_auth_percent_decoded():
    assert basic_auth("http://user:pa55w0rd@o/") == "Basic " + base64.b64encode(b"user:pa55w0rd").decode()
    assert basic_auth("http://us%40er:p%3Ass@o/") == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert basic_auth("http://t0ken@o/") == "Basic " + base64.b64encode(b"t0ken:").decode()
    assert basic_auth("http://o/1.ts?token=t") is None


def test_an_origin_is_its_scheme_host_and_port():
    assert origin_of("http://u:p@Origin:80/a") == origin_of("http://origin/b?c") == ("http", "origin", 80)
    assert origin_of("https://origin/") != origin_of("http://origin:443/")
