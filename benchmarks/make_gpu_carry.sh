#!/usr/bin/env bash
# Build the ignored folders that benchmarks/gpu_evidence.sh needs carried to the GPU machine, on a CPU machine
# with the project's venv active (a fresh checkout has neither: they are derived data, not committed):
#   .carry/clips/         vtest_480x832.mp4 and fake_camera_256.mp4 (the GPU image has no PyAV; OpenCV decodes
#                         them there, engine/video_io.py)
#   .carry/peers_packed/  Self-Forcing's source, its timing harness and its four wheels' contents as
#                         peer-site.tar.xz (/work/shared/peers/README.md)
# Together with the tree they fit one 64 MiB carry (session 21: 36.7 + 2.1 + 3.1 MB; PyAV's 25 MB, carried until
# then, no longer fitted beside the grown tree).
#   bash benchmarks/make_gpu_carry.sh [PEERS_SRC]      # PEERS_SRC defaults to ../shared/peers
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_SRC=${1:-../shared/peers}
CLIPS=.carry/clips PACKED=.carry/peers_packed
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$CLIPS" "$PACKED"

# vtest_480x832.mp4: frames 0-179 of Debian opencv-doc's examples/data/vtest.avi (people walking past a fixed
# camera), rows 66-508 (the 832:480 band) area-resized to 832x480
VTEST=/usr/share/doc/opencv-doc/examples/data/vtest.avi
if [ ! -f "$VTEST" ]; then
    (cd "$TMP" && apt-get download opencv-doc >/dev/null 2>&1 && dpkg -x opencv-doc_*.deb x)
    VTEST=$TMP/x/usr/share/doc/opencv-doc/examples/data/vtest.avi
fi
python - "$VTEST" "$CLIPS/vtest_480x832.mp4" <<'EOF'
import sys
import cv2
from engine.video_io import read_frames, write_video
frames = [cv2.resize(f[66:509], (832, 480), interpolation=cv2.INTER_AREA) for f in read_frames(sys.argv[1], limit=180)]
write_video(frames, sys.argv[2], fps=10)
print(f"wrote {len(frames)} frames to {sys.argv[2]}")
EOF
python benchmarks/record_fake_camera.py --frames 180 --size 256 --out "$CLIPS/fake_camera_256.mp4"

# the peer: source, harness, wheels' contents
tar -xzf "$PEERS_SRC"/self_forcing-*.tar.gz -C "$PACKED"
cp "$PEERS_SRC/peer_self_forcing.py" "$PACKED/"
python -m pip install -q --no-index --no-deps --no-compile --target "$TMP/peer-site" "$PEERS_SRC"/wheels/*.whl
tar -cJf "$PACKED/peer-site.tar.xz" -C "$TMP/peer-site" .
du -sh "$CLIPS" "$PACKED"
