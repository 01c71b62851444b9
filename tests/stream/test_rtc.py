from aioice import ice
from aiortc.codecs import h264, vpx

from stream.rtc import allow_loopback_candidates, apply_bitrate, codec_preferences


def test_preferred_codec_comes_first_and_nothing_is_lost() -> None:
    for prefer, mime in (("h264", "video/H264"), ("vp8", "video/VP8")):
        codecs = codec_preferences(prefer)
        assert codecs[0].mimeType == mime
        assert {c.mimeType for c in codecs} == {"video/H264", "video/VP8", "video/rtx"}


def test_encoders_start_at_the_bitrate_and_congestion_control_only_lowers_it() -> None:
    apply_bitrate(2_000_000)
    for encoder in (vpx.Vp8Encoder(), h264.H264Encoder()):
        assert encoder.target_bitrate == 2_000_000
        encoder.target_bitrate = 50_000_000  # a receiver estimate far above the target
        assert encoder.target_bitrate == 2_000_000
        encoder.target_bitrate = 600_000  # a slow link
        assert encoder.target_bitrate == 600_000


def test_loopback_becomes_a_host_candidate_once() -> None:
    allow_loopback_candidates()
    allow_loopback_candidates()
    addresses = ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    assert addresses.count("127.0.0.1") == 1
    assert "127.0.0.1" not in ice.get_host_addresses(use_ipv4=False, use_ipv6=True)
