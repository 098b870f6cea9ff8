"""Links from the estimators' HTML repr ("?" icon in notebooks) to their API page."""

DOCS_URL = "https://sktransfer.readthedocs.io/en/latest/"


class DocLinkMixin:
    """Point scikit-learn's HTML repr at this package's API pages.

    scikit-learn builds the link from ``_doc_link_module`` (the root package the
    class must belong to), ``_doc_link_template`` and the parameters returned by
    ``_doc_link_url_param_generator``; the pages are the ones ``docs/conf.py``
    generates (``generated/sktransfer.<Name>.html``).
    """

    _doc_link_module = "sktransfer"
    _doc_link_template = DOCS_URL + "generated/sktransfer.{estimator_name}.html"

    def _doc_link_url_param_generator(self):
        return {"estimator_name": type(self).__name__}
