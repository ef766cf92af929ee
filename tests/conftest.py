import pytest

from harness import Service, wait_until, write_config, zombies_under


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.call_failed = report.failed


@pytest.fixture
def service_factory(tmp_path, request):
    """Start the service on a test config; on teardown stop it and check that nothing leaked."""
    started: list[Service] = []

    def start(env: dict | None = None, port: int | None = None, config_text: str | None = None,
              **config) -> Service:
        if config_text is None:
            path = write_config(tmp_path, **config)
        else:  # a whole config of the test's own: several services of one test each have one
            path = tmp_path / f"retrovue-air-{len(started)}.toml"
            path.write_text(config_text)
        service = Service(path, env=env, port=port)
        started.append(service)
        return service

    yield start
    if getattr(request.node, "call_failed", False):
        for service in started:  # the service's own account of what happened
            print(f"--- service log (port {service.port}), last 60 lines ---")
            print("\n".join(service.lines[-60:]))
    for service in started:
        if service.proc.poll() is None:
            # A child caught between its exit and its parent's waitpid is not a leak (a
            # scheduled channel's decoder and encoder die together); one left unreaped is.
            wait_until(lambda: not zombies_under(service.supervisor), 2, "no zombie children of the supervisor")
        code = service.stop()
        service.assert_nothing_left()
        assert code in (0, -9), f"supervisor exit status {code}"


@pytest.fixture
def service(service_factory) -> Service:
    return service_factory()


@pytest.fixture(scope="session")
def schedule_media(tmp_path_factory):
    """The schedule tests' media files (tests/schedule_media.py), made once: {item name: path}."""
    import schedule_media as media
    from harness import require_tool

    ffmpeg = require_tool("ffmpeg")
    folder = tmp_path_factory.mktemp("schedule-media")
    return {item.name: media.make(item, folder, ffmpeg) for item in media.ITEMS}
