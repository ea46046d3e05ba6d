from helpers import commit, read


def test_start_commit_read_stop(server):
    address = ("127.0.0.1", server.port)
    commit(address, answer=42)
    assert read(address, "answer") == 42
    assert server.ctl("status").returncode == 0
    assert server.ctl("stop").returncode == 0
    assert server.ctl("status").returncode == 3
