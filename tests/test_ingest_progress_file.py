"""The ingest progress file is data someone else may have written: the front reads it without
blocking, without following a link and capped, believes only a well-formed document, and
shows each instance its own ingest however many share the cache."""

from __future__ import annotations

import json
import os

import pytest
import requests
from harness import files_channel, require_tool

from retrovue_air import config, ingest_progress, instance
from retrovue_air.ingest_progress import ChannelIngest

GOOD = {"pid": 4321, "running": True,
        "channels": {"tv": {"files": 5, "ingested": 3, "failed": 0, "current": "ep4.mkv", "percent": 40}}}


def encoded(doc) -> bytes:
    return json.dumps(doc).encode()


def with_channel(**fields) -> dict:
    return {**GOOD, "channels": {"tv": {**GOOD["channels"]["tv"], **fields}}}


# The document, without processes


def test_a_well_formed_progress_document_is_believed():
    status = ingest_progress.decode(encoded(GOOD), alive=lambda pid: pid == 4321)
    assert status.running and status.channels == {"tv": ChannelIngest(5, 3, 0, "ep4.mkv", 40)}


BAD = {
    "a string count": with_channel(ingested="3"),
    "a bool count": with_channel(files=True),  # JSON's true is an int to Python
    "a float count": with_channel(files=1e308),
    "a negative count": with_channel(ingested=-1),
    "more in than there are": with_channel(ingested=6),
    "percent over 100": with_channel(percent=101),
    "a number for a name": with_channel(current=7),
    "a huge name": with_channel(current="x" * 5000),
    "percent without a name": with_channel(current=None),
    "an unknown field": with_channel(extra=1),
    "a string pid": {**GOOD, "pid": "4321"},
    "a negative pid": {**GOOD, "pid": -1},
    "a string running": {**GOOD, "running": "yes"},
    "a list of channels": {**GOOD, "channels": []},
    "a channel id that is none": {**GOOD, "channels": {"../etc": GOOD["channels"]["tv"]}},
    "a list for a channel": {**GOOD, "channels": {"tv": ["files", 5]}},
    "no pid": {k: v for k, v in GOOD.items() if k != "pid"},
    "a list": [GOOD],
    "a string": "progress",
}


@pytest.mark.parametrize("doc", BAD.values(), ids=BAD.keys())
def test_a_progress_document_with_anything_wrong_is_no_progress(doc):
    assert ingest_progress.decode(encoded(doc), alive=lambda pid: True) is None


def test_deeply_nested_or_broken_json_is_no_progress():
    for data in (b"[" * 100_000, b"{" * 100_000, b"{\"pid\":", b"\xff\xfe", b"", b"NaN"):
        assert ingest_progress.decode(data, alive=lambda pid: True) is None, data[:20]


# Whose progress file: instance names


def test_an_instance_is_named_by_its_state_directory_and_configuration_and_keeps_its_name(tmp_path):
    cfg = str(tmp_path / "a.toml")
    first = instance.name(str(tmp_path / "state"), cfg)
    instance.name.cache_clear()  # as a restarted service: read back from the state directory
    assert instance.name(str(tmp_path / "state"), cfg) == first
    assert instance.name(str(tmp_path / "other-state"), cfg) != first
    assert instance.name(str(tmp_path / "state"), str(tmp_path / "b.toml")) != first
    # Two machines with the same paths are two instances: the id kept in the state directory is random.
    kept = (tmp_path / "state" / instance.ID_FILE).read_text()
    (tmp_path / "state" / instance.ID_FILE).unlink()
    instance.name.cache_clear()
    assert instance.name(str(tmp_path / "state"), cfg) != first
    assert (tmp_path / "state" / instance.ID_FILE).read_text() != kept


def test_a_fifo_at_the_instance_id_is_not_waited_on(tmp_path):
    (tmp_path / "state").mkdir()
    os.mkfifo(tmp_path / "state" / instance.ID_FILE)
    instance.name.cache_clear()
    name = instance.name(str(tmp_path / "state"), str(tmp_path / "a.toml"))
    assert len(name) == 16 and name == instance.name(str(tmp_path / "state"), str(tmp_path / "a.toml"))


# The front, against a planted file


def ingest_service(service_factory, schedule_media, tmp_path, channel="tv", state="state", **top):
    text = "\n".join([f'state_dir = "{tmp_path / state}"', *(f'{k} = "{v}"' for k, v in top.items())])
    service = service_factory(extra_top=text, extra=files_channel(
        channel, schedule_media["red"], width=160, height=90, video_kbps=200, audio_kbps=64, ingest=True))
    service.wait_for_log(r"the ingester exited with status 0", timeout=60)
    return service


def progress_path(tmp_path) -> str:
    """Where the service of this test's config keeps its progress file."""
    return ingest_progress.progress_path(config.load(str(tmp_path / "retrovue-air.toml")))


def plant(path: str, data: bytes) -> None:
    tmp = path + ".planted"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def assert_pages_answer_without_ingest(service) -> None:
    for path in ("/metrics", "/", "/channels", "/healthz"):
        assert requests.get(service.url(path), timeout=5).status_code == 200, path
    assert service.channels()["tv"]["ingest"] is None
    assert "retrovue_air_ingest_files" not in requests.get(service.url("/metrics"), timeout=5).text


def test_a_fifo_planted_at_the_progress_file_never_blocks_the_front(service_factory, schedule_media, tmp_path):
    require_tool("ffmpeg")
    service = ingest_service(service_factory, schedule_media, tmp_path)
    path = progress_path(tmp_path)
    assert service.channels()["tv"]["ingest"]["ingested"] == 1  # the real file is read
    front = service.front.pid
    os.unlink(path)
    os.mkfifo(path)  # nobody writes it: a plain open() waits for a writer for ever
    assert_pages_answer_without_ingest(service)
    assert service.front.pid == front and service.front.is_running()
    assert service.wait_for_log(r"http_front: .*ingest progress.*not a regular file")


def test_a_crafted_progress_file_is_no_progress_and_one_log_line(service_factory, schedule_media, tmp_path):
    require_tool("ffmpeg")
    service = ingest_service(service_factory, schedule_media, tmp_path)
    path = progress_path(tmp_path)
    front = service.front.pid
    mark = service.log_mark()
    crafted = [b"[" * 100_000, encoded(with_channel(ingested="3")), encoded(with_channel(percent=[1])),
               encoded(GOOD) + b" " * (2 << 20)]  # well formed, but over the cap
    for data in crafted:
        plant(path, data)
        assert_pages_answer_without_ingest(service)
    lines = [line for line in service.lines[mark:] if "ingest progress" in line]
    assert len(lines) == 1, lines  # said once, not per request
    assert str(path) in lines[0]
    assert service.front.pid == front and service.front.is_running()
    assert "started http_front" not in "\n".join(service.lines[mark:])


def test_two_instances_sharing_a_cache_each_show_their_own_ingest(service_factory, schedule_media, tmp_path):
    require_tool("ffmpeg")
    cache = tmp_path / "shared-cache"
    cache.mkdir(mode=0o755)

    def instance(name: str, *media: str):
        text = (f'state_dir = "{tmp_path / ("state-" + name)}"\ncache_dir = "{cache}"\n'
                + files_channel(name, *(schedule_media[m] for m in media), width=160, height=90,
                                video_kbps=200, audio_kbps=64, ingest=True))
        service = service_factory(config_text=text)
        service.wait_for_log(r"the ingester exited with status 0", timeout=60)
        return service
    one = instance("one", "red")
    two = instance("two", "red", "green")  # red is shared: already in, green is made
    assert one.channels()["one"]["ingest"] == {"files": 1, "ingested": 1, "failed": 0, "current": None,
                                               "percent": None}
    assert two.channels()["two"]["ingest"] == {"files": 2, "ingested": 2, "failed": 0, "current": None,
                                               "percent": None}
    for service, other in ((one, "two"), (two, "one")):
        metrics = requests.get(service.url("/metrics"), timeout=5).text
        assert f'channel="{other}"' not in metrics
    progress = [n for n in os.listdir(cache) if n.startswith("ingest-progress")]
    assert len(progress) == 2, progress
