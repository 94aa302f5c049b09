"""Write data/calibration/: a few small JPEG photographs for int8 calibration samples.

The photographs are the ones scikit-image ships inside its wheel (`skimage.data`),
all public domain or CC0 (see each loader's docstring), so the files can live in
the repository and builds never need the network or scikit-image itself.
Each is scaled so its shorter side is 256 pixels (what the `imagenet` preset
resizes a 224 crop from) and saved as a baseline JPEG, quality 90, no metadata.

    .venv/bin/pip install scikit-image
    .venv/bin/python data/make_calibration_images.py
"""
from __future__ import annotations

from pathlib import Path

# skimage.data loader -> file name; grayscale ones are stored as RGB like any camera photo.
PHOTOS = {
    "astronaut": "astronaut.jpg",  # NASA, public domain
    "chelsea": "chelsea.jpg",  # CC0, Stefan van der Walt
    "coffee": "coffee.jpg",  # CC0, Rachel Michetti
    "rocket": "rocket.jpg",  # SpaceX, public domain
    "hubble_deep_field": "hubble_deep_field.jpg",  # NASA, public domain
    "camera": "camera.jpg",  # CC0, Lav Varshney
    "coins": "coins.jpg",  # Brooklyn Museum, no known copyright restrictions
    "brick": "brick.jpg",  # CC0 Textures
}
SHORT_SIDE = 256
FOLDER = Path(__file__).resolve().parent / "calibration"


def main() -> None:
    import skimage.data
    from PIL import Image

    FOLDER.mkdir(exist_ok=True)
    for loader, name in PHOTOS.items():
        img = Image.fromarray(getattr(skimage.data, loader)()).convert("RGB")
        scale = SHORT_SIDE / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        img.save(FOLDER / name, "JPEG", quality=90, optimize=True)
        print(f"{FOLDER / name}: {img.width}x{img.height}, {(FOLDER / name).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
