from slmserve.settings import Settings


def test_a_request_gets_2048_tokens_on_llama_cpp_and_512_on_torch_by_default():
    assert Settings().kv_cells("llama.cpp") == 32 * 2048
    assert Settings().kv_cells("torch") == 32 * 512
    assert Settings(max_running=8).kv_cells("llama.cpp") == 8 * 2048


def test_an_explicit_ctx_size_is_the_total_on_either_backend():
    assert Settings(ctx_size=4096).kv_cells("llama.cpp") == 4096
    assert Settings(ctx_size=4096, max_running=64).kv_cells("torch") == 4096
