"""Published weights by URL: an authors'-layout ``sparx_mamba_tiny_in1k.pth``
(SparX-Mamba-T's real keys and shapes, random values) served from a local
HTTP server reaches the same weights as its local conversion through a
backbone's ``init_cfg``, the runner's ``load_from`` and the download tool;
a second use reads the cache without the server, and a failed download is
one paragraph that names the URL and the way round it (exit status 2)."""
import contextlib
import functools
import http.server
import os
import os.path as osp
import re
import threading
from typing import Dict, Iterator

import pytest
import torch
from conftest import ROOT, load_test_config, official_shapes

from mmsparx.apis import build_runner, prepare_device
from mmsparx.converters.sparx_mamba import convert_sparx_mamba
from mmsparx.fileio import CACHE_ENV, DownloadError, local_copy
from mmsparx.model_zoo.weights import (published_files, stale_weights_tables,
                                       URL_BASE_ENV)
from tools.model_converters import download

FILE = 'sparx_mamba_tiny_in1k.pth'
CONFIG = osp.join(ROOT, 'configs', 'sparx', 'sparx-mamba-t_16xb128_in1k.py')


def authors_state() -> Dict[str, torch.Tensor]:
    """SparX-Mamba-T's authors' keys and shapes, a random vector per key
    broadcast over its shape: any swapped key shows, and the file stays a
    few hundred kB instead of 108 MB."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in official_shapes('sparx_mamba_t').items():
        if key.endswith('num_batches_tracked'):
            state[key] = torch.randint(1, 100, (), generator=g)
        elif not shape:
            state[key] = torch.randn((), generator=g)
        else:
            state[key] = torch.randn(shape[-1], generator=g).expand(shape)
    return state


class Server:
    """A file server on 127.0.0.1 in a thread, stoppable."""

    def __init__(self, folder: str) -> None:
        handler = functools.partial(_QuietHandler, directory=folder)
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                     handler)
        self.base = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope='module')
def served(tmp_path_factory) -> Iterator[dict]:
    """The authors' file on a running server; its reference conversion."""
    folder = tmp_path_factory.mktemp('release')
    state = authors_state()
    torch.save(state, folder / FILE)
    server = Server(str(folder))
    try:
        yield dict(server=server, url=f'{server.base}/{FILE}',
                   expected=convert_sparx_mamba(state))
    finally:
        with contextlib.suppress(OSError):
            server.stop()


@pytest.fixture(scope='module')
def runner(served, tmp_path_factory):
    """The runner of the SparX-Mamba-T ImageNet config with ``load_from``
    the served file, its hooks' ``before_run`` done (as ``runner.test()``
    does before it loads: EMA's copy of the model exists)."""
    work_dir = tmp_path_factory.mktemp('work')
    cfg = load_test_config(CONFIG, None, work_dir)
    cfg.load_from = served['url']
    built = build_runner(cfg, CONFIG, prepare_device(cfg))
    built.call_hook('before_run')
    return built


def dead_url() -> str:
    """An address nothing listens on any more."""
    server = Server(os.getcwd())
    server.stop()
    return f'{server.base}/{FILE}'


def assert_equal_weights(got: Dict[str, torch.Tensor],
                         expected: Dict[str, torch.Tensor],
                         prefix: str = '') -> None:
    keys = [k for k in expected if k.startswith(prefix)]
    assert keys and all(k[len(prefix):] in got for k in keys)
    unequal = [k for k in keys if not torch.equal(got[k[len(prefix):]],
                                                  expected[k])]
    assert not unequal, unequal[:5]


def wipe(model) -> None:
    """Zero every weight: nothing is left from an earlier load."""
    with torch.no_grad():
        for value in model.state_dict().values():
            value.zero_()


def load_url(backbone, url: str) -> Dict[str, torch.Tensor]:
    """``backbone``'s weights after ``init_cfg`` Pretrained from ``url``."""
    wipe(backbone)
    backbone.init_cfg = dict(type='Pretrained', checkpoint=url)
    backbone.init_weights()
    return backbone.state_dict()


def test_init_cfg_url_is_downloaded_once_and_converted(
        served, runner, tmp_path, monkeypatch):
    backbone = runner.model.backbone
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / 'cache'))
    assert_equal_weights(load_url(backbone, served['url']),
                         served['expected'], 'backbone.')
    assert os.listdir(tmp_path / 'cache') == [FILE]  # no part file left
    # The second use reads the cache: the server is not asked.
    monkeypatch.setattr('urllib.request.urlopen', None)
    assert_equal_weights(load_url(backbone, served['url']),
                         served['expected'], 'backbone.')


def test_load_from_url_through_the_runner(served, runner, tmp_path,
                                          monkeypatch):
    """load_from of the authors' ImageNet file (a bare state dict in their
    keys) converts it into the whole classifier, EMA copy included."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / 'cache'))
    ema = [h for h in runner.hooks if type(h).__name__ == 'EMAHook'][0]
    wipe(runner.model)
    wipe(ema.ema_model)
    runner.load_or_resume()
    assert_equal_weights(runner.model.state_dict(), served['expected'])
    assert_equal_weights(ema.ema_model.module.state_dict(),
                         served['expected'])
    assert osp.isfile(tmp_path / 'cache' / FILE)


def test_tools_checkpoint_argument_takes_the_url(served, runner, tmp_path,
                                                 monkeypatch):
    """What the demo, export and analysis tools load a CHECKPOINT with
    reads a URL's cached copy, converted, every key filled."""
    from mmsparx.apis.model import load_checkpoint
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / 'cache'))
    wipe(runner.model)
    load_checkpoint(runner.model, served['url'], CONFIG)
    assert_equal_weights(runner.model.state_dict(), served['expected'])


def test_download_tool_converts_then_works_from_the_cache(
        served, tmp_path, monkeypatch, capsys):
    # The tool's main in this process (its exit status on a failed
    # download: test_failed_download_is_one_paragraph).
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / 'cache'))
    monkeypatch.delenv(URL_BASE_ENV, raising=False)
    download.main([FILE, '--url-base', served['server'].base, '--out-dir',
                   str(tmp_path / 'out')])
    dst = tmp_path / 'out' / 'sparx_mamba_t_in1k.pth'
    assert f'{FILE} -> {dst} (SparX-Mamba-T' in capsys.readouterr().out
    assert_equal_weights(torch.load(dst, weights_only=True)['state_dict'],
                         served['expected'])
    assert os.listdir(tmp_path / 'cache') == [FILE]
    # The server gone, the cached copy converts again.
    again = tmp_path / 'again.pth'
    download.main(['sparx-mamba-t_16xb128_in1k', '--url-base',
                   dead_url().rsplit('/', 1)[0], '--out', str(again)])
    assert f'-> {again} (SparX-Mamba-T' in capsys.readouterr().out
    assert_equal_weights(torch.load(again, weights_only=True)['state_dict'],
                         served['expected'])


def assert_one_paragraph(message: str, url: str, cache: str) -> None:
    assert '\n' not in message.strip(), message
    assert f'could not download {url} (' in message
    assert f'curl -L -O {url}' in message  # the way round the network
    assert osp.join(cache, FILE) in message
    assert f'tools/model_converters/download.py {FILE}' in message


def test_failed_download_is_one_paragraph(served, runner, tmp_path,
                                          monkeypatch, capsys):
    cache = str(tmp_path / 'cache')
    monkeypatch.setenv(CACHE_ENV, cache)
    url = dead_url()
    with pytest.raises(DownloadError) as err:
        load_url(runner.model.backbone, url)
    assert_one_paragraph(str(err.value), url, cache)
    assert 'Connection refused' in str(err.value)
    # mmengine's URL route (load_from) is ours too.
    from mmengine.runner.checkpoint import CheckpointLoader
    with pytest.raises(DownloadError):
        CheckpointLoader.load_checkpoint(url)
    missing = f'{served["server"].base}/missing.pth'
    with pytest.raises(DownloadError, match='HTTP 404'):
        local_copy(missing)
    assert os.listdir(cache) == []  # nothing half-written
    with pytest.raises(SystemExit) as exit_:
        download.main([FILE, '--url-base', url.rsplit('/', 1)[0],
                       '--out-dir', str(tmp_path / 'out')])
    assert exit_.value.code == 2
    stderr = capsys.readouterr().err
    assert_one_paragraph(stderr, url, cache)
    assert not osp.exists(tmp_path / 'out' / 'sparx_mamba_t_in1k.pth')


def test_metafile_lists_the_release_and_the_readme_shows_it():
    files = published_files(ROOT)
    release = 'https://github.com/LMMMEng/SparX/releases/download/v1/'
    assert len(files) == 12
    assert all(item.url == release + item.file for item in files)
    assert len({item.converted for item in files}) == len(files)
    assert stale_weights_tables(ROOT) == [], (
        'run python tools/model_converters/download.py --update-readme')
    # The ImageNet files convert into the files the dense configs start
    # from.
    converted = {item.converted for item in files}
    folder = osp.join(ROOT, 'configs', 'sparx')
    for name in os.listdir(folder):
        if 'sparx-mamba' in name and not name.endswith('in1k.py'):
            with open(osp.join(folder, name)) as f:
                for path in re.findall(r"checkpoints/(sparx_mamba_\w+\.pth)",
                                       f.read()):
                    assert path in converted, (name, path)
