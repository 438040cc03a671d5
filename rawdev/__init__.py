"""rawdev: camera RAW files to finished 16-bit images with CSANet, a learned ISP."""

__version__ = "0.1.0"
DEFAULT_MODEL = "csanet-nmlpsp-c32"
