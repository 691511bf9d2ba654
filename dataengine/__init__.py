"""dataengine: raw video, audio, images, sensor recordings and text to shared-vocabulary token shards."""

__version__ = "0.1.0"
