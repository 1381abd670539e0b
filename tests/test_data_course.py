"""load_course_data: EMNIST when available, otherwise the offline digits, said out loud."""

import socket

import pytest

from fedteach.data import DownloadError, load_course_data, make_emnist_like_clients, write_emnist_h5


@pytest.fixture
def closed_url():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return f'http://127.0.0.1:{port}/'


@pytest.fixture
def listening_url():
    """A server that accepts connections but must never be asked anything."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen()
        sock.settimeout(0.0)
        yield f'http://127.0.0.1:{sock.getsockname()[1]}/', sock


def assert_no_connection(sock):
    with pytest.raises(BlockingIOError):
        sock.accept()


def test_falls_back_to_offline_digits_explaining_why(monkeypatch, tmp_path, closed_url, capsys):
    monkeypatch.delenv('FEDTEACH_DATA', raising=False)
    train, test = load_course_data(cache_dir=tmp_path, base_url=closed_url)
    assert len(train) == 200 and train.client_ids == test.client_ids
    line = capsys.readouterr().out.strip()
    assert line.startswith('Using the offline digits dataset (200 simulated writers, ')
    assert 'federated EMNIST is not cached and could not be downloaded (Could not download' in line
    assert 'connection was refused' in line and '\n' not in line


def test_uses_cached_emnist_without_network(monkeypatch, tmp_path, listening_url, capsys):
    monkeypatch.delenv('FEDTEACH_DATA', raising=False)
    for split, n in (('train', 3), ('test', 1)):
        write_emnist_h5(tmp_path / f'fed_emnist_digitsonly_{split}.h5', make_emnist_like_clients(2, n))
    url, sock = listening_url
    train, test = load_course_data(cache_dir=tmp_path, base_url=url)
    assert len(train) == 2 and test.num_examples('f0000_00') == 1
    assert capsys.readouterr().out == f'Using federated EMNIST (2 writers, 6 train examples, cached in {tmp_path}).\n'
    assert_no_connection(sock)


def test_env_var_offline_never_touches_the_network(monkeypatch, tmp_path, listening_url, capsys):
    monkeypatch.setenv('FEDTEACH_DATA', 'offline')
    url, sock = listening_url
    load_course_data(cache_dir=tmp_path, base_url=url)
    assert capsys.readouterr().out.rstrip().endswith(': FEDTEACH_DATA=offline.')
    assert_no_connection(sock)
    assert list(tmp_path.iterdir()) == []


def test_env_var_emnist_raises_instead_of_falling_back(monkeypatch, tmp_path, closed_url):
    monkeypatch.setenv('FEDTEACH_DATA', 'emnist')
    with pytest.raises(DownloadError, match='load_offline_digits'):
        load_course_data(cache_dir=tmp_path, base_url=closed_url)


def test_quiet_when_asked(monkeypatch, capsys):
    monkeypatch.delenv('FEDTEACH_DATA', raising=False)
    load_course_data(prefer='offline', verbose=False)
    assert capsys.readouterr().out == ''


@pytest.mark.parametrize('env, prefer, name', [('', 'mnist', 'prefer'), ('cloud', 'emnist', 'FEDTEACH_DATA')])
def test_unknown_choices_are_rejected(monkeypatch, env, prefer, name):
    monkeypatch.setenv('FEDTEACH_DATA', env)
    with pytest.raises(ValueError, match=f"{name} must be 'emnist' or 'offline'"):
        load_course_data(prefer=prefer)
