"""Tables of the demo corpus: the captions written for each photo and sound, and fixed choices.

Kept apart from `democorpus` so the generator stays readable; every caption is
this project's own description of what the picture shows or the sound is.
"""
from __future__ import annotations

SUBDIRS = ("images", "audio", "video", "sensors", "text", "chat")
SENSOR_CHANNELS = ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")
# BasicMotions calls the resting class "Standing"; its header describes it as resting.
SENSOR_LABELS = {"standing": "resting", "walking": "walking", "running": "running", "badminton": "badminton"}

# stem -> (caption written for this corpus, short noun phrase reused by variants and videos)
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("A NASA portrait of astronaut Eileen Collins in an orange flight suit, holding her helmet, with "
                  "the US flag and a model space shuttle behind her.", "astronaut Eileen Collins"),
    "brick": ("A black and white photo of a brick wall, narrow bricks in staggered rows, at a slant.", "a brick wall"),
    "camera": ("A black and white photo of a man in a dark coat looking through a camera on a tripod, on a lawn "
               "with buildings far behind him.", "a cameraman with a tripod"),
    "cell": ("A grey microscope image of one small round cell on a grainy background.", "a cell under a microscope"),
    "chelsea": ("A close-up photo of a tabby cat with green eyes looking up at the camera.", "a tabby cat"),
    "chessboard_GRAY": ("A black and white chessboard pattern of square tiles.", "a chessboard pattern"),
    "chessboard_RGB": ("A chessboard of black and white squares, stored as a colour image.", "a chessboard pattern"),
    "clock_motion": ("A round clock face smeared by motion blur, on a plain grey background.", "a blurred clock"),
    "coffee": ("A photo of a cup of coffee on a red saucer with a spoon, on a wooden table.", "a cup of coffee"),
    "coins": ("A black and white photo of rows of old coins on a dark background.", "rows of old coins"),
    "color": ("A colour wheel: a disc of every hue fading to white at its centre, on black.", "a colour wheel"),
    "grass": ("A black and white close-up texture of tangled grass blades.", "grass"),
    "gravel": ("A black and white close-up texture of small gravel stones.", "gravel"),
    "horse": ("A black silhouette of a standing horse on a white background.", "a horse silhouette"),
    "hubble_deep_field": ("The Hubble Deep Field: hundreds of faint, colourful galaxies scattered over black space.",
                          "distant galaxies"),
    "ihc": ("A microscope image of tissue stained brown and blue, showing rounded glands.", "stained tissue"),
    "logo": ("The scikit-image logo: a round green and orange badge with a drawn snake.", "a round logo"),
    "microaneurysms": ("A small grey close-up of a retina with thin dark vessels and a few tiny dark spots.",
                       "retinal blood vessels"),
    "moon": ("A black and white photo of the cratered surface of the Moon.", "the surface of the Moon"),
    "motorcycle_left": ("A red motorcycle parked in a workshop with shelves of boxes behind it, seen from the left "
                        "camera of a stereo pair.", "a red motorcycle"),
    "motorcycle_right": ("A red motorcycle parked in a workshop with shelves of boxes behind it, seen from the right "
                         "camera of a stereo pair.", "a red motorcycle"),
    "page": ("A scanned book page on region-based segmentation: a heading, a paragraph and a line of code.",
             "a printed page"),
    "phantom": ("A synthetic head-shaped test image: grey ellipses in a bright oval on black.", "a head phantom"),
    "retina": ("A colour photo of the back of a human eye, with the bright optic disc and branching blood vessels.",
               "the back of an eye"),
    "rocket": ("A rocket on the launch pad at night, lit by floodlights between tall towers.", "a rocket on a pad"),
    "text": ("A slanted black and white photo of handwritten maths formulas on lined paper.", "handwritten formulas"),
}
LOSSLESS = {"chessboard_GRAY", "chessboard_RGB", "color", "horse", "logo", "phantom", "page", "camera", "moon"}

# pygame's recorded sounds -> what you hear
SOUNDS: dict[str, str] = {
    "boom": "an explosion, a loud boom that rumbles away",
    "car_door": "a car door slamming shut",
    "house_lo": "a loop of house music with a steady, thumping beat",
    "punch": "a punch sound effect, a short dull thud",
    "secosmic_lo": "a sustained, spacey electronic tone that fades out",
    "whiff": "a quick whoosh, like a swing that misses",
}
VIDEO_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "motorcycle_left", "hubble_deep_field", "coins", "retina")
MOTIONS = {
    "zoom_in": "A slow zoom into", "zoom_out": "A slow zoom out from",
    "pan_right": "A slow pan from left to right across", "pan_down": "A slow pan from top to bottom over",
}
