"""The errors of serving.client_lib: every client failure is one ServingError subclass.

str() of each is a one-line message for the user: what went wrong and on which server.
Plain Python, so the REST and the gRPC side raise the same classes without importing each other.
"""


class ServingError(Exception):
    """Base of every client error; str() is a message for the user."""


class ServerUnavailableError(ServingError):
    """Connection refused, unreachable, or timed out after all retries."""


class ModelNotFoundError(ServingError):
    """The server does not serve this model name, version or signature."""


class BadRequestError(ServingError):
    """The server rejected the input (not an image, over the pixel limit, bad shape...)."""


class ServerSideError(ServingError):
    """The server failed while handling a valid request."""
