from .images import IMAGE_EXTENSIONS, list_images, load_image

__all__ = ["IMAGE_EXTENSIONS", "list_images", "load_image"]
