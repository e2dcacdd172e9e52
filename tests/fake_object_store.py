"""An in-memory object store behind gs:// URLs: fsspec's memory file system registered as the
driver for 'gs' (what gcsfs registers when installed), so a gs://bucket/run workdir runs
through exactly the code a real bucket does, down to the fsspec calls.

Like a bucket it has no rename (moving raises) and no file locks; `FakeGCS.writes` counts the
objects written. `AnonymousGCS` refuses every write the way gcsfs does without credentials.
"""
import fsspec
from fsspec.implementations.memory import MemoryFileSystem


class FakeGCS(MemoryFileSystem):
  protocol = ('gs', 'gcs')
  store = {}  # its own, not the memory:// store
  pseudo_dirs = ['']
  writes = 0

  @classmethod
  def _strip_protocol(cls, path):
    path = str(path)
    for prefix in ('gs://', 'gcs://'):
      if path.startswith(prefix):
        path = path[len(prefix):]
    return MemoryFileSystem._strip_protocol(path)

  def pipe_file(self, path, value, *args, **kwargs):
    type(self).writes += 1
    return super().pipe_file(path, value, *args, **kwargs)

  def put_file(self, lpath, rpath, *args, **kwargs):
    type(self).writes += 1
    return super().put_file(lpath, rpath, *args, **kwargs)

  def mv(self, *args, **kwargs):
    raise NotImplementedError('an object store has no rename')

  rename = move = mv


class HttpError(Exception):
  """gcsfs.retry.HttpError's shape: the message and code GCS sends an anonymous caller."""


class AnonymousGCS(FakeGCS):
  store = {}

  def pipe_file(self, path, value, *args, **kwargs):
    raise HttpError('Anonymous caller does not have storage.objects.create access to the Google Cloud Storage '
                    f'object. Permission \'storage.objects.create\' denied on resource {path}., 401')

  put_file = pipe_file


def install(cls=FakeGCS):
  """Registers `cls` for gs:// (and gcs://), emptied; returns a function that undoes it."""
  import importlib
  registry = importlib.import_module('fsspec.registry')  # the module (fsspec.registry is also a mapping)
  saved = {k: registry._registry.get(k) for k in ('gs', 'gcs')}
  cls.store.clear()
  cls.pseudo_dirs[:] = ['']
  cls.writes = 0
  for name in ('gs', 'gcs'):
    fsspec.register_implementation(name, cls, clobber=True)
  cls.clear_instance_cache()

  def undo():
    for name, value in saved.items():
      if value is None:
        registry._registry.pop(name, None)
      else:
        registry._registry[name] = value
    cls.clear_instance_cache()
  return undo
