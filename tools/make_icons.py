"""Draw the page's app icons (src/edgeser/web/static/icons/): a waveform in a rounded square,
as SVG and as the 192 and 512 pixel PNGs a web app manifest needs (maskable: the drawing
keeps to the central 80 %). Run once; the files are committed."""

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[1] / "src" / "edgeser" / "web" / "static" / "icons"
BG, FG = "#2b6cb0", "#ffffff"
BARS = (0.28, 0.5, 0.78, 0.42, 0.9, 0.6, 0.34)  # heights, as a fraction of the safe zone


def png(size: int) -> None:
    img = Image.new("RGB", (size, size), BG)
    draw = ImageDraw.Draw(img)
    safe = 0.56 * size  # inside the maskable safe zone
    width = safe / (2 * len(BARS) - 1)
    x = (size - safe) / 2
    for h in BARS:
        top = size / 2 - h * safe / 2
        draw.rounded_rectangle([x, top, x + width, size - top], radius=width / 2, fill=FG)
        x += 2 * width
    img.save(OUT / f"icon-{size}.png", optimize=True)


def svg() -> str:
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">',
        f'<rect width="100" height="100" rx="18" fill="{BG}"/>',
    ]
    safe, width = 56.0, 56.0 / (2 * len(BARS) - 1)
    x = (100 - safe) / 2
    for h in BARS:
        top = 50 - h * safe / 2
        parts.append(
            f'<rect x="{x:.2f}" y="{top:.2f}" width="{width:.2f}" '
            f'height="{100 - 2 * top:.2f}" rx="{width / 2:.2f}" fill="{FG}"/>'
        )
        x += 2 * width
    return "".join(parts) + "</svg>\n"


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for size in (192, 512):
        png(size)
    (OUT / "icon.svg").write_text(svg(), encoding="utf-8")
