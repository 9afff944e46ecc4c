"""The bottom layer for weights: reading checkpoint files safely
(:mod:`.reading`, :mod:`.restricted_unpickle`), fetching those given by URL
into a cache (:mod:`.download`), writing them whole or not
at all (:mod:`.writing`) and fitting a state dict to a model
(:mod:`.fitting`). It imports nothing else of mmsparx."""
from mmsparx.fileio.download import (CACHE_ENV, DownloadError, cache_dir,
                                     cached_path, is_url, local_copy)
from mmsparx.fileio.fitting import (REPORT_LIST_LIMIT, CheckpointError,
                                    LoadReport, adapt_keys, fit_problems,
                                    load_state_dict)
from mmsparx.fileio.reading import (UNSAFE_ENV, install_mmengine_loader,
                                    load_checkpoint_file,
                                    load_checkpoint_with_ignored, name_list,
                                    state_dict_of)
from mmsparx.fileio.writing import save_checkpoint_file, write_atomically

__all__ = ['CACHE_ENV', 'CheckpointError', 'DownloadError', 'LoadReport',
           'REPORT_LIST_LIMIT', 'UNSAFE_ENV', 'adapt_keys', 'cache_dir',
           'cached_path', 'is_url', 'local_copy', 'fit_problems',
           'install_mmengine_loader', 'load_checkpoint_file',
           'load_checkpoint_with_ignored', 'load_state_dict', 'name_list',
           'save_checkpoint_file', 'state_dict_of', 'write_atomically']
