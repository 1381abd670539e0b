"""load_emnist: a verified, resumable, cached, locked download of TFF's EMNIST files.

A local HTTP server on 127.0.0.1 serves generated archives in TFF's exact
format; `_sha256` points the loader at their checksum.
"""

import hashlib
import http.server
import socket
import threading
import time

import numpy as np
import pytest

from fedteach.data import DownloadError, load_emnist, make_emnist_like_clients, write_emnist_archive
from fedteach.data.emnist import SHA256, resolve_cache_dir

ARCHIVE = 'fed_emnist_digitsonly.tar.bz2'


class FileServer:
    """Serves `files` (name -> bytes); records requests; can ignore Range or truncate."""

    def __init__(self):
        self.files = {}
        self.requests = []  # (path, Range header or None)
        self.support_range = True
        self.truncate_to = None
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), self._handler())
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/'
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requested_range = self.headers.get('Range')
                server.requests.append((self.path, requested_range))
                data = server.files.get(self.path.lstrip('/'))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if requested_range and server.support_range:
                    start = int(requested_range.removeprefix('bytes=').split('-')[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body[: server.truncate_to])
                self.close_connection = True

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture(scope='module')
def archives(tmp_path_factory):
    """Two generated archives: digits only and full, with their clients and checksums."""
    folder = tmp_path_factory.mktemp('archives')
    made = {}
    for only_digits, name in ((True, ARCHIVE), (False, 'fed_emnist.tar.bz2')):
        train = make_emnist_like_clients(4, [5, 3, 6, 2], seed=1)
        test = make_emnist_like_clients(4, 2, seed=2)
        data = write_emnist_archive(folder / name, train, test, only_digits).read_bytes()
        made[name] = {'train': train, 'test': test, 'bytes': data,
                      'sha256': hashlib.sha256(data).hexdigest()}
    return made


@pytest.fixture
def server(archives):
    served = FileServer()
    served.files = {name: a['bytes'] for name, a in archives.items()}
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


def load(server, archives, cache, **kwargs):
    kwargs.setdefault('_sha256', archives[ARCHIVE]['sha256'])
    return load_emnist(cache_dir=cache, base_url=server.url, verbose=False, **kwargs)


def closed_port_url():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return f'http://127.0.0.1:{port}/'


def test_production_checksums_are_the_published_ones():
    assert SHA256 == {
        True: '55333deb8546765427c385710ca5e7301e16f4ed8b60c1dc5ae224b42bd5b14b',
        False: 'fe1ed5a502cea3a952eb105920bff8cffb32836b5173cb18a57a32c3606f3ea0',
    }


def test_download_is_verified_extracted_and_cached(server, archives, tmp_path):
    train, test = load(server, archives, tmp_path)
    expected = archives[ARCHIVE]
    assert train.client_ids == sorted(expected['train'])
    assert train.num_examples('f0002_00') == 6 and test.num_examples('f0002_00') == 2
    np.testing.assert_array_equal(
        train.client_arrays('f0000_00')['pixels'], expected['train']['f0000_00']['pixels']
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'fed_emnist_digitsonly.lock', ARCHIVE,
        'fed_emnist_digitsonly_test.h5', 'fed_emnist_digitsonly_train.h5',
    ]
    assert server.requests == [('/' + ARCHIVE, None)]

    again, _ = load(server, archives, tmp_path)
    assert again.client_ids == train.client_ids
    assert len(server.requests) == 1  # Served from the cache.


def test_full_emnist_uses_its_own_archive_and_file_names(server, archives, tmp_path):
    train, _ = load(server, archives, tmp_path, only_digits=False,
                    _sha256=archives['fed_emnist.tar.bz2']['sha256'])
    assert len(train) == 4
    assert (tmp_path / 'fed_emnist_train.h5').is_file()
    assert server.requests == [('/fed_emnist.tar.bz2', None)]


def test_bad_checksum_is_refused_and_nothing_is_kept(server, archives, tmp_path):
    with pytest.raises(DownloadError, match=r'checksum mismatch: expected sha256 0{64}, got '):
        load(server, archives, tmp_path, _sha256='0' * 64)
    assert [p.name for p in tmp_path.iterdir()] == ['fed_emnist_digitsonly.lock']


def test_truncated_download_is_refused(server, archives, tmp_path):
    server.truncate_to = 100
    with pytest.raises(DownloadError, match='truncated'):
        load(server, archives, tmp_path)
    assert not (tmp_path / ARCHIVE).exists()
    assert not list(tmp_path.glob('*.h5'))


def test_partial_download_is_resumed_with_a_range_request(server, archives, tmp_path):
    data = archives[ARCHIVE]['bytes']
    (tmp_path / (ARCHIVE + '.part')).write_bytes(data[:1000])
    train, _ = load(server, archives, tmp_path)
    assert len(train) == 4
    assert server.requests == [('/' + ARCHIVE, 'bytes=1000-')]
    assert (tmp_path / ARCHIVE).read_bytes() == data
    assert not (tmp_path / (ARCHIVE + '.part')).exists()


def test_partial_download_restarts_when_the_server_ignores_range(server, archives, tmp_path):
    server.support_range = False
    (tmp_path / (ARCHIVE + '.part')).write_bytes(b'not the start of the archive')
    train, _ = load(server, archives, tmp_path)
    assert len(train) == 4
    assert (tmp_path / ARCHIVE).read_bytes() == archives[ARCHIVE]['bytes']


def test_partial_file_longer_than_the_archive_restarts(server, archives, tmp_path):
    data = archives[ARCHIVE]['bytes']
    (tmp_path / (ARCHIVE + '.part')).write_bytes(data + b'junk')
    load(server, archives, tmp_path)
    assert [r[1] for r in server.requests] == [f'bytes={len(data) + 4}-', None]
    assert (tmp_path / ARCHIVE).read_bytes() == data


def test_corrupted_cached_archive_is_downloaded_again(server, archives, tmp_path):
    (tmp_path / ARCHIVE).write_bytes(b'corrupted')
    train, _ = load(server, archives, tmp_path)
    assert len(train) == 4
    assert len(server.requests) == 1
    assert (tmp_path / ARCHIVE).read_bytes() == archives[ARCHIVE]['bytes']


def test_concurrent_loaders_share_one_download(server, archives, tmp_path):
    results, errors = [], []

    def worker():
        try:
            results.append(load(server, archives, tmp_path)[0].client_ids)
        except Exception as error:  # Reported by the assertion below.
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [sorted(archives[ARCHIVE]['train'])] * 4
    assert len(server.requests) == 1
    assert not list(tmp_path.glob('*.part')) and not list(tmp_path.glob('*.extracting'))


@pytest.mark.parametrize(
    'base_url, cause',
    [(closed_port_url(), 'connection was refused'),
     ('http://fedteach-no-such-host.invalid/', 'could not be resolved')],
)
def test_unreachable_server_fails_fast_with_offline_advice(tmp_path, base_url, cause):
    start = time.perf_counter()
    with pytest.raises(DownloadError) as info:
        load_emnist(cache_dir=tmp_path, base_url=base_url, verbose=False)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert message.startswith(f'Could not download {base_url}{ARCHIVE}: the ')
    assert cause in message.splitlines()[0]
    assert 'ft.load_offline_digits()' in message and 'ft.load_course_data()' in message
    assert 'path=' in message
    assert not (tmp_path / ARCHIVE).exists()


def test_http_errors_are_download_errors(server, tmp_path):
    server.files = {}
    with pytest.raises(DownloadError, match='HTTP error 404'):
        load_emnist(cache_dir=tmp_path, base_url=server.url, verbose=False)


def test_local_directory_with_the_archive_needs_no_network(archives, tmp_path):
    (tmp_path / ARCHIVE).write_bytes(archives[ARCHIVE]['bytes'])
    train, test = load_emnist(path=tmp_path, base_url=closed_port_url(), verbose=False,
                              _sha256=archives[ARCHIVE]['sha256'])
    assert len(train) == len(test) == 4
    assert (tmp_path / 'fed_emnist_digitsonly_train.h5').is_file()


def test_local_directory_with_extracted_files(archives, tmp_path):
    (tmp_path / ARCHIVE).write_bytes(archives[ARCHIVE]['bytes'])
    load_emnist(path=tmp_path, verbose=False, _sha256=archives[ARCHIVE]['sha256'])
    (tmp_path / ARCHIVE).unlink()
    train, _ = load_emnist(path=tmp_path, verbose=False)  # Production checksum unused.
    assert len(train) == 4


def test_local_path_errors_say_what_is_expected(archives, tmp_path):
    with pytest.raises(FileNotFoundError, match='neither fed_emnist_digitsonly.tar.bz2 nor'):
        load_emnist(path=tmp_path, verbose=False)
    with pytest.raises(FileNotFoundError, match='expected a directory'):
        load_emnist(path=tmp_path / 'nowhere', verbose=False)
    (tmp_path / ARCHIVE).write_bytes(archives[ARCHIVE]['bytes'])
    with pytest.raises(ValueError, match="not TFF's federated EMNIST"):
        load_emnist(path=tmp_path, verbose=False)  # The production checksum differs.


def test_verbose_load_says_it_downloads_then_extracts(server, archives, tmp_path, capsys):
    load_emnist(cache_dir=tmp_path, base_url=server.url, _sha256=archives[ARCHIVE]['sha256'])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f'Downloading {server.url}{ARCHIVE} into {tmp_path} (only the first time).'
    assert lines[1].startswith('Extracting ')


def test_cache_dir_defaults_to_env_var_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv('FEDTEACH_CACHE', str(tmp_path))
    assert resolve_cache_dir() == tmp_path
    monkeypatch.delenv('FEDTEACH_CACHE')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert resolve_cache_dir() == tmp_path / 'home' / '.cache' / 'fedteach'
