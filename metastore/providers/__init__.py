"""Metadata providers: callables ``provider(type, image_id, *args)`` for a Registry.

Each provider lives in its own module beside this one (``memory``,
``override``, ``dicomjson``, ``database``) and is imported from there; this
package module imports none of them, so using one provider never loads the
others' dependencies.
"""
