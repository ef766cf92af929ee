"""An IRI (RFC 3987) as the URI (RFC 3986) that a header, a playlist or a guide may carry.

An operator writes a logo URL as a browser shows it, "https://例え.テスト/ロゴ.png". A Location
header holds Latin-1 at most and clients expect ASCII; an M3U attribute is a quoted string on
one line. So, as RFC 3987 section 3.1 maps an IRI: every character a URI may not hold (non-ASCII,
a space, a quote, a control) becomes its UTF-8 bytes percent-encoded, an escape already made
(%XX) stays as it is, and a host with non-ASCII letters becomes its IDNA A-label, the form DNS
resolves. A URI is returned unchanged, so encoding twice is encoding once.
"""

from __future__ import annotations

import re
import string

# RFC 3986's unreserved and reserved characters: a URI holds these as they are.
_KEEP = frozenset(string.ascii_letters + string.digits + "-._~" + ":/?#[]@" + "!$&'()*+,;=")
_HEX = frozenset(string.hexdigits)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def percent_encode(text: str) -> str:
    """text with every character a URI may not hold percent-encoded; %XX escapes kept."""
    out = []
    for i, c in enumerate(text):
        if c in _KEEP or (c == "%" and len(text) >= i + 3 and text[i + 1] in _HEX and text[i + 2] in _HEX):
            out.append(c)
        else:
            # surrogatepass: a lone surrogate (from a bad tag, say) is still encoded, not an exception.
            out.append("".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")))
    return "".join(out)


def _host(host: str) -> str:
    if host.isascii():
        return percent_encode(host)
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:  # not a valid name (a label too long, say): RFC 3986 allows it percent-encoded
        return percent_encode(host)


def _authority(authority: str) -> str:
    userinfo, at, hostport = authority.rpartition("@")
    if hostport.startswith("["):  # an IPv6 literal: its colons are not a port's
        host, bracket, port = hostport.partition("]")
        host, port = host + bracket, port
    else:
        host, colon, digits = hostport.rpartition(":")
        host, port = (host, colon + digits) if colon and digits.isdigit() else (hostport, "")
    return percent_encode(userinfo) + at + _host(host) + percent_encode(port)


def to_uri(iri: str) -> str:
    """The URI of iri: "https://例え.テスト/ロゴ.png" -> "https://xn--r8jz45g.xn--zckzah/%E3%83%AD%E3%82%B4.png"."""
    scheme, sep, rest = iri.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return percent_encode(iri)
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    return scheme + sep + _authority(rest[:end]) + percent_encode(rest[end:])
