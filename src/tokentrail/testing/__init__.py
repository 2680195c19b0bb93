from tokentrail.testing.fake_upstream import FakeUpstream, Reply, ToolCall

__all__ = ["FakeUpstream", "Reply", "ToolCall"]
