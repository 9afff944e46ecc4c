"""Whether an image file can be trained on: missing, empty, truncated or
undecodable files found before they become a ``cv2.error`` without a file
name, or a JPEG that decodes to a partly grey image without a word."""
from __future__ import annotations

import os
import os.path as osp
from typing import Optional, Tuple

_JPEG_SOI = b'\xff\xd8'
_JPEG_EOI = b'\xff\xd9'


def _ends_like_jpeg(path: str) -> bool:
    """Whether the file ends with the JPEG end-of-image marker (some
    writers pad after it with zeros or spaces, which is harmless)."""
    with open(path, 'rb') as f:
        f.seek(max(0, osp.getsize(path) - 256))
        tail = f.read().rstrip(b'\x00\r\n\t ')
    return tail.endswith(_JPEG_EOI)


def decode_problem(path: str
                   ) -> Tuple[Optional[str], Optional[Tuple[int, int]]]:
    """Fully decode ``path`` with PIL, truncation counted as an error;
    return ``(problem or None, (width, height) or None)``."""
    from PIL import Image, ImageFile
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a cut file must raise
    try:
        with Image.open(path) as image:
            size = image.size
            image.load()
    except OSError as err:
        text = str(err)
        if 'truncated' in text or 'broken data stream' in text:
            return f'truncated ({text})', None
        return f'unreadable ({text})', None
    except Exception as err:  # PIL raises SyntaxError etc. on garbage
        return f'unreadable ({type(err).__name__}: {err})', None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    return None, size


def image_problem(path: str, full: bool = False) -> Optional[str]:
    """What is wrong with the image at ``path``, or None.

    The quick check (``full=False``, used for every sample in training)
    reads a few bytes: missing, 0 bytes, a JPEG without its end marker
    (then decoded to tell a cut file from a padded one). ``full=True``
    decodes every image (``python -m mmsparx.datasets check``).
    """
    if not osp.isfile(path):
        return 'missing'
    if os.stat(path).st_size == 0:
        return 'empty (0 bytes)'
    if not full:
        with open(path, 'rb') as f:
            head = f.read(2)
        if head != _JPEG_SOI or _ends_like_jpeg(path):
            return None
    return decode_problem(path)[0]
