"""oldphoto: restore scanned old photographs at archive scale, with a record of everything done."""

__version__ = "0.1.0"
