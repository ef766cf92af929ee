"""HDHomeRun emulation: what a network tuner answers over HTTP, as Plex, Jellyfin, Emby and
Channels DVR read it.

Jellyfin (HdHomerunHost.cs) reads discover.json for TunerCount and ModelNumber (a model
containing "HDTC" makes it append ?transcode=… to stream URLs, which the routes ignore),
then lineup.json for GuideNumber, GuideName, URL, HD; its channel ids are "hdhr_" + the
guide number, split again on "_", which is why a guide number never holds one. Plex also
asks lineup_status.json and POSTs lineup.post?scan=start before it reads the lineup.
"""

from __future__ import annotations

import hashlib
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

from retrovue_air.config import Channel

from .public_urls import tuner_url

# Clients key their behaviour on these, not on our own name: HDTC-2US is the model that
# transcodes (so Jellyfin offers its profiles) and "Silicondust" is what they expect to see.
MANUFACTURER = "Silicondust"
MODEL_NUMBER = "HDTC-2US"
FIRMWARE_NAME = "hdhomeruntc_atsc"
FIRMWARE_VERSION = "20250506"
ALL_TUNERS_IN_USE = (("X-HDHomeRun-Error", "805 All Tuners In Use"),)
HD_MIN_HEIGHT = 720


@dataclass(frozen=True)
class Device:
    device_id: str  # 8 hex digits with a valid checksum (retrovue_air.device_id)
    friendly_name: str
    tuner_count: int  # max_active_channels: each channel on air takes one "tuner"

    @property
    def device_auth(self) -> str:
        # Real devices use it to talk to SiliconDust's guide service; ours only has to be
        # stable and look like one.
        return hashlib.sha256(f"retrovue-air:{self.device_id}".encode()).hexdigest()[:24]

    @property
    def udn(self) -> str:
        return f"uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'retrovue-air:hdhomerun:{self.device_id}')}"


def discover(device: Device, base: str) -> dict:
    return {
        "FriendlyName": device.friendly_name,
        "Manufacturer": MANUFACTURER,
        "ModelNumber": MODEL_NUMBER,
        "FirmwareName": FIRMWARE_NAME,
        "FirmwareVersion": FIRMWARE_VERSION,
        "DeviceID": device.device_id,
        "DeviceAuth": device.device_auth,
        "BaseURL": base,
        "LineupURL": f"{base}/lineup.json",
        "TunerCount": device.tuner_count,
    }


def lineup(channels: Iterable[Channel], base: str) -> list[dict]:
    return [{"GuideNumber": c.number, "GuideName": c.name, "URL": tuner_url(base, c),
             "HD": 1 if c.height >= HD_MIN_HEIGHT else 0, "VideoCodec": "H264", "AudioCodec": "AAC"}
            for c in channels]


def lineup_status() -> dict:
    return {"ScanInProgress": 0, "ScanPossible": 1, "Source": "Cable", "SourceList": ["Cable"]}


def device_xml(device: Device, base: str) -> bytes:
    """The UPnP root device description that SSDP's LOCATION points to."""
    ns = "urn:schemas-upnp-org:device-1-0"
    root = ET.Element("root", {"xmlns": ns})
    spec = ET.SubElement(root, "specVersion")
    ET.SubElement(spec, "major").text = "1"
    ET.SubElement(spec, "minor").text = "0"
    ET.SubElement(root, "URLBase").text = base
    dev = ET.SubElement(root, "device")
    for tag, text in (("deviceType", "urn:schemas-upnp-org:device:MediaServer:1"),
                      ("friendlyName", device.friendly_name), ("manufacturer", MANUFACTURER),
                      ("modelName", MODEL_NUMBER), ("modelNumber", MODEL_NUMBER),
                      ("serialNumber", device.device_id), ("UDN", device.udn)):
        ET.SubElement(dev, tag).text = text
    ET.indent(root, space=" ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"
