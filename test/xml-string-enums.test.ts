// Qwen3-Coder's string parameters limited to some values (enum, const) are held to them in the tool-call
// grammar that llama.cpp's chat layer makes (families.test.ts checks the calls a model then writes).
import t from 'tap';
import { loadAddon } from '../src/native.js';
import { holdXmlStringEnums } from '../src/chat/xml-string-enums.js';
import { familyModelPath } from './helpers/models.js';

const tools = [
  {
    type: 'function',
    function: {
      name: 'set.mode',
      description: 'x',
      parameters: {
        type: 'object',
        properties: {
          mode: { type: 'string', enum: ['fast', 'say "hi"\n'] },
          kind: { const: 'only' },
          free: { type: 'string' },
          level: { type: ['string', 'integer'], enum: ['low', 3] },
        },
        required: ['mode'],
      },
    },
  },
];

t.test('the rules of enum and const string parameters take only their values', async (t) => {
  const addon = loadAddon();
  const vocab = new addon.Model(await familyModelPath('qwen3-coder'), { vocabOnly: true });
  t.teardown(() => vocab.free());
  const { grammar } = new addon.ChatTemplates(vocab).render(JSON.stringify({ messages: [{ role: 'user', content: 'go' }], tools, toolChoice: 'required' }));
  const rule = (g: string, name: string) => g.split('\n').find((line) => line.startsWith(`${name} ::= `));
  t.match(rule(grammar, 'tool-set-mode-arg-mode'), / xml-arg-string$/, 'the chat layer takes any text');

  const held = holdXmlStringEnums(grammar, tools);
  t.equal(rule(held, 'tool-set-mode-arg-mode'), 'tool-set-mode-arg-mode ::= ("<parameter=" "mode" ">\\n") ("fast" | "say \\"hi\\"\\n") "\\n</parameter>\\n"');
  t.match(rule(held, 'tool-set-mode-arg-kind'), /\("only"\) "\\n<\/parameter>\\n"$/, 'const');
  t.match(rule(held, 'tool-set-mode-arg-free'), / xml-arg-string$/, 'a free string is left as it is');
  t.equal(rule(held, 'tool-set-mode-arg-level'), rule(grammar, 'tool-set-mode-arg-level'), 'an enum with a number is left as it is');
  t.equal(holdXmlStringEnums(held, tools), held, 'applying it again changes nothing');
});

t.test('grammars of other formats are left as they are', async (t) => {
  const json = 'root ::= "{" space "}"\nspace ::= " "?';
  t.equal(holdXmlStringEnums(json, tools), json);
  t.equal(holdXmlStringEnums(json, undefined), json);
});
